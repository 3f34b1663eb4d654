package service

import (
	"io"
	"log/slog"
)

// Logger is the service's logger: lines in LOG_FORMAT on w, at LOG_LEVEL.
// Attributes are named alike in both services: an error is "err".
func (c Common) Logger(w io.Writer) *slog.Logger {
	return newLogger(w, c.LogFormat, c.Level)
}

func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
