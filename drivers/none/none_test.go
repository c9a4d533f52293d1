package none_test

import (
	"context"
	"strings"
	"testing"

	"github.com/agentproj/agent/drivers/none"
	"github.com/agentproj/agent/drivers/workload"
)

func TestEnsureStartsNothingAndReportsUnmanaged(t *testing.T) {
	d := none.New()
	ctx := context.Background()
	st, err := d.Ensure(ctx, workload.Spec{Name: "prometheus", Image: "prom/prometheus:v2.42.0"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != workload.StatusUnmanaged || st.Driver != "none" || st.Name != "prometheus" || st.ID != "" {
		t.Fatalf("Ensure = %+v; want unmanaged, no id", st)
	}
	if got, _ := d.Inspect(ctx, "prometheus"); got.Status != workload.StatusUnmanaged {
		t.Fatalf("Inspect = %+v", got)
	}
	if list, err := d.List(ctx, nil); err != nil || len(list) != 0 {
		t.Fatalf("List = %v, %v; want nothing", list, err)
	}
	if err := d.Remove(ctx, "prometheus"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Ensure(ctx, workload.Spec{Name: "Bad_Name"}); err == nil || !strings.Contains(err.Error(), `got "Bad_Name"`) {
		t.Fatalf("Ensure of a bad spec = %v", err)
	}
}
