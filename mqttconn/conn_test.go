package mqttconn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// Everything written arrives, in order, and Written says so once it has
// left; Close sends what is still pending (Paho writes DISCONNECT and closes
// at once).
func TestConnWritesInOrderAndFlushesOnClose(t *testing.T) {
	nc, peer := tcpPair(t)
	c := newConn(nc, 5*time.Second)
	var want bytes.Buffer
	for i := range 1000 {
		p := bytes.Repeat([]byte{byte(i)}, i%50+1)
		want.Write(p)
		if n, err := c.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write #%d = %d, %v; want %d, nil", i, n, err, len(p))
		}
	}
	if err := waitWritten(t.Context(), c); err != nil {
		t.Fatalf("waitWritten = %v, want nil", err)
	}
	c.mu.Lock()
	queued, written := c.queued, c.written
	c.mu.Unlock()
	if written != queued || queued != uint64(want.Len()) {
		t.Errorf("after waitWritten: written %d, queued %d, want both %d", written, queued, want.Len())
	}
	last := []byte{0xe0, 0x00} // a DISCONNECT packet
	want.Write(last)
	if _, err := c.Write(last); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatalf("read peer: %v", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("peer read %d bytes, want the %d written, in order", len(got), want.Len())
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
}

// Reads are buffered but see every byte.
func TestConnReads(t *testing.T) {
	nc, peer := tcpPair(t)
	c := newConn(nc, 5*time.Second)
	defer c.Close()
	want := []byte{0x40, 0x02, 0x00, 0x01, 0x40, 0x02, 0x00, 0x02} // two PUBACKs
	if _, err := peer.Write(want); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	for i := range got { // one byte at a time, as Paho reads a header
		if _, err := io.ReadFull(c, got[i:i+1]); err != nil {
			t.Fatalf("read byte %d: %v", i, err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Errorf("read %x, want %x", got, want)
	}
}

// A write that fails is reported to every later Write and to Written,
// and closes the connection so that Paho's reader fails too.
func TestConnWriteFailure(t *testing.T) {
	nc, _ := tcpPair(t)
	c := newConn(nc, 5*time.Second)
	defer c.Close()
	// Closing the socket under the conn makes its next write(2) fail.
	if err := nc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{1, 2, 3}); err != nil {
		t.Fatalf("first Write = %v, want it buffered", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := waitWritten(ctx, c); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waitWritten = %v, want the failed write's error", err)
	}
	if _, err := c.Write([]byte{4}); err == nil {
		t.Errorf("Write after a failed write = nil, want the error")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("Read after a failed write = nil, want an error")
	}
}

// A broker that takes nothing (stopped) holds a write until the write
// timeout; a wait for Written gives up with its context, and Close does not wait
// for the whole timeout.
func TestConnStalledPeer(t *testing.T) {
	nc, peer := tcpPair(t) // the peer never reads
	if err := nc.(*net.TCPConn).SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := peer.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	c := newConn(nc, time.Minute)
	big := make([]byte, 1<<20)
	for range maxPending >> 20 { // more than the socket buffers hold, less than a conn does
		if _, err := c.Write(big); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := waitWritten(ctx, c); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waitWritten = %v, want the context's deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the write timeout (1 minute)")
	}
}

// waitWritten waits, as the publisher does for a QoS 0 publish, until
// everything given to c so far has been written out, a write has failed
// (its error) or ctx ends.
func waitWritten(ctx context.Context, c *Conn) error {
	n := c.Queued()
	for {
		done, next, err := c.Written(n)
		if err != nil || done {
			return err
		}
		select {
		case <-next:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
