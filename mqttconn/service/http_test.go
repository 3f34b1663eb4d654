package service_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/telemetry-stack/mqtt-stack/mqttconn/service"
)

// A panicking handler is answered through the service's problem writer;
// an aborted one is not answered at all.
func TestRecover(t *testing.T) {
	var refused []int
	refuse := func(w http.ResponseWriter, r *http.Request, status int, detail string) {
		refused = append(refused, status)
		w.WriteHeader(status)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := service.Recover(log, refuse)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("boom")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusInternalServerError || len(refused) != 1 {
		t.Errorf("after a panic: status %d, refusals %v; want 500 through refuse", rec.Code, refused)
	}
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Errorf("recovered %v, want http.ErrAbortHandler passed on", v)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/abort", nil))
	}()
	if len(refused) != 1 {
		t.Errorf("refusals %v after an abort, want none more", refused)
	}
}
