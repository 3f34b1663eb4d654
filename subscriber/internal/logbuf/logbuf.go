// Package logbuf holds log lines back so that many leave in one write(2):
// the subscriber's arrival lines, one per message, whose write(2) each was
// the larger part of what logging a message cost. Lines keep their order,
// whichever way they were written.
package logbuf

import (
	"io"
	"sync"
)

// limit is how much is held before it is written out without waiting for
// a Flush: a bound on memory and on what a crash can take with it.
const limit = 64 << 10

// Writer writes to an underlying writer. Lines written to it go out at
// once, after any lines held before them; lines written to Held wait for
// the next Flush, or until limit bytes are held, or until a line comes
// through the Writer itself.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// New returns a Writer in front of w.
func New(w io.Writer) *Writer { return &Writer{w: w} }

// Write writes what is held and then p, in one write.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) == 0 {
		return w.w.Write(p)
	}
	w.buf = append(w.buf, p...)
	if err := w.flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes out what is held.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flush()
}

// flush writes out buf. Callers hold mu. What a failed write took is gone
// either way, as with an unbuffered log: it is not written twice.
func (w *Writer) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.w.Write(w.buf)
	if cap(w.buf) > 2*limit {
		w.buf = nil // a long line's buffer is not kept
	} else {
		w.buf = w.buf[:0]
	}
	return err
}

// Held returns the writer whose lines wait: see Writer.
func (w *Writer) Held() io.Writer { return held{w} }

type held struct{ w *Writer }

func (h held) Write(p []byte) (int, error) {
	w := h.w
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) >= limit {
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
