package main

import (
	"io"
	"log/slog"
	"strings"
)

// newLogger returns a logger whose level can change on SIGHUP.
func newLogger(w io.Writer, format, level string) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	setLevel(lv, level)
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h), lv
}

func setLevel(lv *slog.LevelVar, level string) {
	var l slog.Level
	_ = l.UnmarshalText([]byte(strings.ToUpper(level))) // validated by stackconfig
	lv.Set(l)
}
