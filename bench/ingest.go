package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// makeSession connects clientID with a persistent session, subscribes it
// to filter at QoS 1 and disconnects, so that the broker queues what is
// published on filter until the client comes back.
func makeSession(brokerURL, clientID, filter string) error {
	c, err := connect(brokerURL, mqtt.NewClientOptions().SetClientID(clientID).SetCleanSession(false))
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	t := c.Subscribe(filter, 1, nil)
	if !t.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("subscribe %s: timed out", filter)
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	return nil
}

// fillQueue publishes n QoS 1 messages of load (sample, or jsonSample)
// under prefix straight to the broker and waits for every PUBACK.
func fillQueue(ctx context.Context, brokerURL, prefix string, n int, load func(prefix string, i int) (topic, payload string)) error {
	c, err := connect(brokerURL, mqtt.NewClientOptions().SetClientID("bench-filler"))
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	const workers, window = 8, 500
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range workers {
		wg.Go(func() {
			toks := make([]mqtt.Token, 0, window)
			for ctx.Err() == nil {
				from := int(next.Add(window) - window)
				if from >= n {
					return
				}
				toks = toks[:0]
				for i := from; i < min(from+window, n); i++ {
					t, m := load(prefix, i)
					toks = append(toks, c.Publish(t, 1, false, m))
				}
				for _, t := range toks {
					if !t.WaitTimeout(30 * time.Second) {
						errOnce.Do(func() { firstErr = errors.New("fill queue: no PUBACK within 30s") })
						return
					}
					if err := t.Error(); err != nil {
						errOnce.Do(func() { firstErr = fmt.Errorf("fill queue: %w", err) })
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return firstErr
}

// pahoDrain is the ingest baseline: a plain paho client resumes clientID's
// session and receives (and acknowledges, after its handler returns, as
// paho does by default) n queued messages without storing them. It
// returns messages per second from the connect call to the n-th message.
func pahoDrain(ctx context.Context, brokerURL, clientID string, n int, limit time.Duration) (float64, error) {
	var got atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	opts := mqtt.NewClientOptions().SetClientID(clientID).SetCleanSession(false).
		SetDefaultPublishHandler(func(_ mqtt.Client, _ mqtt.Message) {
			if got.Add(1) == int64(n) {
				once.Do(func() { close(done) })
			}
		})
	start := time.Now()
	c, err := connect(brokerURL, opts)
	if err != nil {
		return 0, err
	}
	defer c.Disconnect(250)
	select {
	case <-done:
		return rate(n, time.Since(start)), nil
	case <-time.After(limit):
		return 0, fmt.Errorf("received %d of %d queued messages in %s", got.Load(), n, limit)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// metricSum adds up every sample of the metric name in Prometheus text
// exposition format; ok is false when there is none.
func metricSum(text []byte, name string) (sum float64, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, found := strings.CutPrefix(line, name)
		if !found || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum, ok = sum+v, true
	}
	return sum, ok
}

// newestID reads the id of the first (newest) row of a GET /messages answer.
func newestID(body []byte) (int64, error) {
	var page struct {
		Messages []storedMessage `json:"messages"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return 0, fmt.Errorf("decode messages: %w", err)
	}
	if len(page.Messages) == 0 {
		return 0, nil
	}
	return page.Messages[0].ID, nil
}

// commitStats are the subscriber's own counters of its commits.
type commitStats struct {
	commits, seconds, messages float64
	slow                       float64 // commits that took longer than slowCommit
	buckets                    []bucket
}

// bucket is one cumulative bucket of a Prometheus histogram.
type bucket struct {
	le    float64 // upper bound in seconds; +Inf for the last
	count float64
}

// histogramBuckets reads the cumulative buckets of histogram name, in
// the order they are exposed (ascending).
func histogramBuckets(text []byte, name string) []bucket {
	var out []bucket
	prefix := name + `_bucket{le="`
	for line := range strings.SplitSeq(string(text), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		le, v, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		bound, err1 := strconv.ParseFloat(le, 64)
		n, err2 := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, bucket{bound, n})
	}
	return out
}

// slowest is the upper bound of the first bucket that holds every commit
// made between before and s: the longest of them took at most that long.
func (s commitStats) slowest(before commitStats) float64 {
	total := s.commits - before.commits
	for i, b := range s.buckets {
		n := b.count
		if i < len(before.buckets) {
			n -= before.buckets[i].count
		}
		if n >= total {
			return b.le
		}
	}
	return math.Inf(1)
}

// slowCommit is a bucket bound of subscriber_commit_duration_seconds: a
// commit longer than this alone breaks the end-to-end p99 target.
const slowCommit = "0.008"

// readCommitStats scrapes the subscriber's commit histograms.
func readCommitStats(ctx context.Context, sub *Proc) (commitStats, error) {
	body, err := get(ctx, newClient(1), sub.URL()+"/metrics")
	if err != nil {
		return commitStats{}, err
	}
	var s commitStats
	var ok1, ok2, ok3 bool
	s.commits, ok1 = metricSum(body, "subscriber_commit_duration_seconds_count")
	s.seconds, ok2 = metricSum(body, "subscriber_commit_duration_seconds_sum")
	s.messages, ok3 = metricSum(body, "subscriber_batch_size_sum")
	fast, ok4 := metricSum(body, `subscriber_commit_duration_seconds_bucket{le="`+slowCommit+`"}`)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return s, errors.New("no commit histograms in /metrics")
	}
	s.slow = s.commits - fast
	s.buckets = histogramBuckets(body, "subscriber_commit_duration_seconds")
	return s, nil
}

// since describes the commits between before and s.
func (s commitStats) since(before commitStats) string {
	n := s.commits - before.commits
	if n <= 0 {
		return "no commits"
	}
	return fmt.Sprintf("%.0f commits, %.1f messages and %.2f ms each on average, %.0f over %s s, the longest under %g s (subscriber's own histograms)",
		n, (s.messages-before.messages)/n, (s.seconds-before.seconds)/n*1000, s.slow-before.slow, slowCommit, s.slowest(before))
}
