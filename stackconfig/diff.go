package stackconfig

import (
	"reflect"
)

// Changed lists the keys whose values differ between a and b, in the order
// of the Config fields, with sections dotted ("etcd.endpoints").
func Changed(a, b *Config) []string {
	var out []string
	diffStruct("", reflect.ValueOf(*a), reflect.ValueOf(*b), &out)
	return out
}

func diffStruct(prefix string, a, b reflect.Value, out *[]string) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := prefix + f.Tag.Get("mapstructure")
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == t.PkgPath() {
			diffStruct(key+".", a.Field(i), b.Field(i), out)
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			*out = append(*out, key)
		}
	}
}
