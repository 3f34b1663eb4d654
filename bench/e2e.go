package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// storedMessage is a row as GET /messages and the stream show it.
type storedMessage struct {
	ID         int64     `json:"id"`
	Topic      string    `json:"topic"`
	Payload    string    `json:"payload"`
	Encoding   string    `json:"encoding"`
	ReceivedAt time.Time `json:"received_at"`
}

// seqOf reads the sequence number out of a payload made by sample.
func seqOf(payload string) (int, bool) {
	rest, ok := strings.CutPrefix(payload, "seq=")
	if !ok {
		return 0, false
	}
	n, _, _ := strings.Cut(rest, " ")
	i, err := strconv.Atoi(n)
	return i, err == nil
}

// e2eResult holds, per message, when its request was due and when it was
// seen stored.
type e2eResult struct {
	Method   string // "stream" or "received_at"
	Sent     int    // answered 200 by the publisher
	Failed   int
	Seen     int
	Commit   Latencies // request due -> stored (stream event read), or -> received_at
	Arrival  Latencies // request due -> received_at, where the stream gave both
	Inside   Latencies // received_at -> stream event: queue, commit, stream
	HTTP     Latencies // publish request -> answer
	FirstErr string
}

// endToEnd publishes n messages through the publisher at a steady rate
// (open loop: request i is due at start + i/rate, whether or not earlier
// answers have come, so a stall shows as latency instead of being hidden)
// and measures from when each request was due to when it is seen stored.
//
// Where the subscriber has GET /messages/stream, a message is seen stored
// when its event arrives: the stream carries only committed rows, so that
// is the time to commit plus the stream's own delivery. Otherwise the run
// reads the rows afterwards and takes their received_at, which the
// subscriber stamps on arrival, before the commit: that figure then leaves
// the commit out and says so.
func endToEnd(ctx context.Context, pub, sub *Proc, conns, n, perSecond int) (e2eResult, error) {
	var res e2eResult
	due := make([]time.Time, n)
	seen := make([]time.Time, n)
	arrived := make([]time.Time, n)
	var mu sync.Mutex // guards seen, arrived, res.Seen while the stream runs

	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	events, streamErr := openStream(streamCtx, sub.URL()+"/messages/stream?topic="+url.QueryEscape("bench/e2e/#"))
	var readers sync.WaitGroup
	if streamErr == nil {
		res.Method = "stream"
		readers.Go(func() {
			for m := range events {
				t := time.Now()
				i, ok := seqOf(m.Payload)
				if !ok || i < 0 || i >= n {
					continue
				}
				mu.Lock()
				if seen[i].IsZero() {
					seen[i], arrived[i] = t, m.ReceivedAt
					res.Seen++
				}
				mu.Unlock()
			}
		})
	} else {
		res.Method = "received_at"
	}

	client := newClient(conns)
	type job struct{ i int }
	jobs := make(chan job, n)
	var workers sync.WaitGroup
	var wmu sync.Mutex
	for range conns {
		workers.Go(func() {
			for j := range jobs {
				t, m := sample("bench/e2e", j.i)
				b, err := json.Marshal(publishRequest{Topic: t, Message: m, QoS: new(int(1))})
				if err == nil {
					start := time.Now()
					err = post(ctx, client, pub.URL()+"/publish", b)
					wmu.Lock()
					if err == nil {
						res.Sent++
						res.HTTP = append(res.HTTP, time.Since(start))
					}
					wmu.Unlock()
				}
				if err != nil {
					wmu.Lock()
					res.Failed++
					if res.FirstErr == "" {
						res.FirstErr = err.Error()
					}
					wmu.Unlock()
				}
			}
		})
	}
	interval := time.Second / time.Duration(perSecond)
	start := time.Now()
	for i := range n {
		due[i] = start.Add(time.Duration(i) * interval)
		if d := time.Until(due[i]); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			break
		}
		jobs <- job{i}
	}
	close(jobs)
	workers.Wait()

	if res.Method == "stream" {
		// Wait for the tail to be committed and streamed, 10 s at most.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			all := res.Seen >= res.Sent
			mu.Unlock()
			if all {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		stopStream()
		readers.Wait()
	} else {
		rows, err := listAll(ctx, client, sub.URL(), "bench/e2e/#", 15*time.Second, res.Sent)
		if err != nil {
			return res, fmt.Errorf("read back (no stream: %v): %w", streamErr, err)
		}
		for _, m := range rows {
			if i, ok := seqOf(m.Payload); ok && i >= 0 && i < n && seen[i].IsZero() {
				seen[i] = m.ReceivedAt
				res.Seen++
			}
		}
	}
	for i := range n {
		if !seen[i].IsZero() {
			res.Commit = append(res.Commit, seen[i].Sub(due[i]))
		}
		if !arrived[i].IsZero() {
			res.Arrival = append(res.Arrival, arrived[i].Sub(due[i]))
			res.Inside = append(res.Inside, seen[i].Sub(arrived[i]))
		}
	}
	if res.Sent == 0 {
		return res, fmt.Errorf("no publish succeeded: %s", res.FirstErr)
	}
	return res, nil
}

// openStream opens the subscriber's event stream and returns its messages
// on a channel that closes when ctx ends or the stream breaks.
func openStream(ctx context.Context, u string) (<-chan storedMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("new request: %w", err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("get %s: status %d, content type %q", u, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan storedMessage, 1024)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64*1024), 4<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data:")
			if !ok {
				continue
			}
			var m storedMessage
			if json.Unmarshal([]byte(strings.TrimSpace(data)), &m) != nil {
				continue
			}
			select {
			case out <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// listAll pages through GET /messages for filter until it has want rows or
// the pages end, for at most d.
func listAll(ctx context.Context, client *http.Client, base, filter string, d time.Duration, want int) ([]storedMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var all []storedMessage
	for ctx.Err() == nil {
		all = all[:0]
		before := ""
		for {
			u := base + "/messages?limit=1000&topic=" + url.QueryEscape(filter)
			if before != "" {
				u += "&before=" + url.QueryEscape(before)
			}
			b, err := get(ctx, client, u)
			if err != nil {
				return nil, err
			}
			var page struct {
				Messages []storedMessage `json:"messages"`
				Next     *string         `json:"next"`
			}
			if err := json.Unmarshal(b, &page); err != nil {
				return nil, fmt.Errorf("decode messages: %w", err)
			}
			all = append(all, page.Messages...)
			if page.Next == nil || *page.Next == "" {
				break
			}
			before = *page.Next
		}
		if len(all) >= want {
			return all, nil
		}
		time.Sleep(200 * time.Millisecond) // the tail may still be committing
	}
	if len(all) > 0 {
		return all, nil
	}
	return nil, errors.New("no stored messages found")
}
