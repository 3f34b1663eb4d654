package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// newClient is an HTTP client holding up to conns keep-alive connections to
// one host, which is all the load generator talks to.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil, // loopback only, whatever the environment says
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

// load is a closed-loop HTTP load: Conns workers each send one request,
// wait for the answer, and send the next, until MaxRequests have been
// started or Duration has passed, whichever comes first.
type load struct {
	Conns       int
	Duration    time.Duration
	MaxRequests int
	// Body returns the JSON body of request i.
	Body func(i int) []byte
	URL  string
}

type loadResult struct {
	OK, Failed int
	Elapsed    time.Duration
	Latency    Latencies
	FirstError string
}

// add sums r into a result of several rounds.
func (a *loadResult) add(r loadResult) {
	a.OK += r.OK
	a.Failed += r.Failed
	a.Elapsed += r.Elapsed
	a.Latency = append(a.Latency, r.Latency...)
	if a.FirstError == "" {
		a.FirstError = r.FirstError
	}
}

// PerSecond is answered requests (status 200) per second.
func (r loadResult) PerSecond() float64 { return rate(r.OK, r.Elapsed) }

func (l load) run(ctx context.Context, client *http.Client) loadResult {
	var (
		next     atomic.Int64
		mu       sync.Mutex
		res      loadResult
		wg       sync.WaitGroup
		start    = time.Now()
		deadline = start.Add(l.Duration)
	)
	for range l.Conns {
		wg.Go(func() {
			var lat Latencies
			var ok, failed int
			var firstErr string
			for {
				i := int(next.Add(1) - 1)
				if i >= l.MaxRequests || time.Now().After(deadline) || ctx.Err() != nil {
					break
				}
				t := time.Now()
				err := post(ctx, client, l.URL, l.Body(i))
				if err != nil {
					failed++
					if firstErr == "" {
						firstErr = err.Error()
					}
					continue
				}
				ok++
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			defer mu.Unlock()
			res.OK += ok
			res.Failed += failed
			res.Latency = append(res.Latency, lat...)
			if res.FirstError == "" {
				res.FirstError = firstErr
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}

// post sends body as JSON and reads the whole answer; any status but 200 is
// an error.
func post(ctx context.Context, client *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("new request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer of %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("post %s: status %d: %.200s", url, resp.StatusCode, b)
	}
	return nil
}

// get reads url whole; any status but 200 is an error.
func get(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("new request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: status %d: %.200s", url, resp.StatusCode, b)
	}
	return b, nil
}
