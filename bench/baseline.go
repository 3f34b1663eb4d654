package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// publishRequest is the publisher's request body as the contract gives it.
type publishRequest struct {
	Topic    string `json:"topic"`
	Message  string `json:"message"`
	QoS      *int   `json:"qos,omitempty"`
	Retain   bool   `json:"retain,omitempty"`
	Encoding string `json:"encoding,omitempty"`
}

// sample is message i of a load: a topic out of 100 and a short text
// payload of the size a sensor reading has.
func sample(prefix string, i int) (topic, payload string) {
	return prefix + "/" + strconv.Itoa(i%100), "seq=" + strconv.Itoa(i) + " value=21.5"
}

// jsonSample is sample with a JSON payload of two numbers, the fields seq
// and value: what a device that reports readings sends.
func jsonSample(prefix string, i int) (topic, payload string) {
	return prefix + "/" + strconv.Itoa(i%100), `{"seq":` + strconv.Itoa(i) + `,"value":21.5}`
}

// publishBodies returns n request bodies for /publish with the given QoS.
func publishBodies(n, qos int) ([][]byte, error) {
	out := make([][]byte, n)
	for i := range out {
		t, m := sample("bench/http", i)
		b, err := json.Marshal(publishRequest{Topic: t, Message: m, QoS: &qos})
		if err != nil {
			return nil, fmt.Errorf("encode publish request: %w", err)
		}
		out[i] = b
	}
	return out, nil
}

// batchBodies returns n bodies for /publish/batch of size QoS 1 messages each.
func batchBodies(n, size int) ([][]byte, error) {
	one := 1
	out := make([][]byte, n)
	for i := range out {
		var batch struct {
			Messages []publishRequest `json:"messages"`
		}
		for j := range size {
			t, m := sample("bench/batch", i*size+j)
			batch.Messages = append(batch.Messages, publishRequest{Topic: t, Message: m, QoS: &one})
		}
		b, err := json.Marshal(batch)
		if err != nil {
			return nil, fmt.Errorf("encode batch request: %w", err)
		}
		out[i] = b
	}
	return out, nil
}

// serveBaseline is the HTTP baseline: a minimal net/http server that
// decodes and checks the same JSON the publisher takes and answers 200 the
// way the publisher does, without MQTT. The run starts it as a process of
// its own (`bench baseline-http`) so that it pays what the publisher pays:
// its own scheduler, its own garbage collector, loopback TCP.
func serveBaseline(ctx context.Context, stdout io.Writer) error {
	log := slog.New(slog.NewJSONHandler(stdout, nil))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /publish", func(w http.ResponseWriter, r *http.Request) {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		var req publishRequest
		if err := dec.Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if req.Topic == "" || req.QoS != nil && (*req.QoS < 0 || *req.QoS > 2) {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		qos := 1
		if req.QoS != nil {
			qos = *req.QoS
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(map[string]any{
			"topic": req.Topic, "qos": qos, "retain": req.Retain, "bytes": len(req.Message),
		}); err != nil {
			log.Warn("write answer", "err", err)
		}
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("http server listening", "addr", l.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// connect makes a paho client and connects it, failing after 10 s.
func connect(brokerURL string, opts *mqtt.ClientOptions) (mqtt.Client, error) {
	opts.AddBroker(brokerURL).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	c := mqtt.NewClient(opts)
	t := c.Connect()
	if !t.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect to %s: timed out", brokerURL)
	}
	if err := t.Error(); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", brokerURL, err)
	}
	return c, nil
}

// pahoBatches is the batch baseline: a plain paho client c publishing the
// same messages as the HTTP batches, workers windows of size at a time,
// each window waited for (every PUBACK) before the worker sends the next.
// It returns the acknowledged messages and the time they took.
func pahoBatches(ctx context.Context, c mqtt.Client, workers, size int, d time.Duration, maxBatches int) (int, time.Duration, error) {
	var (
		next     atomic.Int64
		acked    atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
		start    = time.Now()
		deadline = start.Add(d)
	)
	for range workers {
		wg.Go(func() {
			toks := make([]mqtt.Token, 0, size)
			for {
				i := int(next.Add(1) - 1)
				if i >= maxBatches || time.Now().After(deadline) || ctx.Err() != nil {
					return
				}
				toks = toks[:0]
				for j := range size {
					t, m := sample("bench/batch", i*size+j)
					toks = append(toks, c.Publish(t, 1, false, m))
				}
				for _, t := range toks {
					if !t.WaitTimeout(5 * time.Second) {
						errOnce.Do(func() { firstErr = errors.New("no PUBACK within 5s") })
						return
					}
					if err := t.Error(); err != nil {
						errOnce.Do(func() { firstErr = fmt.Errorf("publish: %w", err) })
						return
					}
				}
				acked.Add(int64(size))
			}
		})
	}
	wg.Wait()
	return int(acked.Load()), time.Since(start), firstErr
}
