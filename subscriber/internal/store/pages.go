package store

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/bits"
	"slices"
)

// The delivery records of a session are kept in pages: the records of the
// packet ids id>>PageBits = page (PageSize of them) are stored together, as
// records of RecordSize bytes in the order of their ids (Page.Encode). A
// commit of 2,000 arrivals, whose ids the broker hands out in turn,
// writes about 125 pages instead of 2,000 rows (docs/performance.md).
// The migrations that made the stores' tables encode the same way in SQL:
// keep them alike.
const (
	PageBits   = 4
	PageSize   = 1 << PageBits
	RecordSize = 2 + 1 + 4*8 // packet id, QoS and Pending, Conn, Seq, MessageID, Hash
)

// PageOf returns the page of packet id id.
func PageOf(id uint16) int64 { return int64(id >> PageBits) }

// Page is the records of one page: slot i holds packet id
// page<<PageBits | i, when bit i of has is set.
type Page struct {
	has  uint16
	recs [PageSize]Delivery
}

// Set records d, replacing the record of its packet id.
func (p *Page) Set(d Delivery) {
	i := d.PacketID & (PageSize - 1)
	p.has |= 1 << i
	p.recs[i] = d
}

// Get returns the record of id.
func (p *Page) Get(id uint16) (Delivery, bool) {
	i := id & (PageSize - 1)
	return p.recs[i], p.has&(1<<i) != 0
}

// Release clears Pending of id's record, and reports whether there is one.
func (p *Page) Release(id uint16) bool {
	i := id & (PageSize - 1)
	if p.has&(1<<i) == 0 {
		return false
	}
	p.recs[i].Pending = false
	return true
}

// Empty reports whether the page holds no record.
func (p *Page) Empty() bool { return p.has == 0 }

// Each calls f with each record, in the order of packet ids.
func (p *Page) Each(f func(d *Delivery)) {
	for has := p.has; has != 0; has &= has - 1 {
		f(&p.recs[bits.TrailingZeros16(has)])
	}
}

// Forget drops the records of connections before epoch, and reports
// whether any went.
func (p *Page) Forget(epoch int64) bool {
	before := p.has
	p.Each(func(d *Delivery) {
		if d.Conn < epoch {
			p.has &^= 1 << (d.PacketID & (PageSize - 1))
		}
	})
	return p.has != before
}

// AppendSince appends to out the records of connections from epoch on,
// in the order of packet ids.
func (p *Page) AppendSince(out []Delivery, epoch int64) []Delivery {
	p.Each(func(d *Delivery) {
		if d.Conn >= epoch {
			out = append(out, *d)
		}
	})
	return out
}

// ForgetVoid drops from pages (by page number) the records of connections
// before epoch, which a new broker session voided. It returns the numbers
// of the pages that lost records and hold others still, and of those left
// empty, in order, and the oldest connection a record left refers to
// (connected if none is left): acknowledgement marks of connections before
// it serve nothing any more.
func ForgetVoid(pages map[int64]*Page, epoch, connected int64) (changed, empty []int64, oldest int64) {
	oldest, found := connected, false
	for _, no := range slices.Sorted(maps.Keys(pages)) {
		p := pages[no]
		switch {
		case !p.Forget(epoch):
		case p.Empty():
			empty = append(empty, no)
		default:
			changed = append(changed, no)
		}
		p.Each(func(d *Delivery) {
			if !found || d.Conn < oldest {
				oldest, found = d.Conn, true
			}
		})
	}
	return changed, empty, oldest
}

// Encode appends the records to buf: each the packet id (2 bytes), QoS +
// 4 if Pending (1 byte), then Conn, Seq, MessageID and Hash (8 bytes each),
// big-endian.
func (p *Page) Encode(buf []byte) []byte {
	p.Each(func(d *Delivery) {
		flags := d.QoS
		if d.Pending {
			flags |= 4
		}
		buf = binary.BigEndian.AppendUint16(buf, d.PacketID)
		buf = append(buf, flags)
		buf = binary.BigEndian.AppendUint64(buf, uint64(d.Conn))
		buf = binary.BigEndian.AppendUint64(buf, uint64(d.Seq))
		buf = binary.BigEndian.AppendUint64(buf, uint64(d.MessageID))
		buf = binary.BigEndian.AppendUint64(buf, d.Hash)
	})
	return buf
}

// DecodePage reads the records of page no from data.
func DecodePage(no int64, data []byte) (*Page, error) {
	if len(data)%RecordSize != 0 {
		return nil, fmt.Errorf("delivery page %d: %d bytes, not records of %d", no, len(data), RecordSize)
	}
	p := new(Page)
	for ; len(data) > 0; data = data[RecordSize:] {
		d := Delivery{
			PacketID:  binary.BigEndian.Uint16(data),
			QoS:       data[2] & 3,
			Pending:   data[2]&4 != 0,
			Conn:      int64(binary.BigEndian.Uint64(data[3:])),
			Seq:       int64(binary.BigEndian.Uint64(data[11:])),
			MessageID: int64(binary.BigEndian.Uint64(data[19:])),
			Hash:      binary.BigEndian.Uint64(data[27:]),
		}
		if PageOf(d.PacketID) != no || d.QoS > 2 || data[2] > 7 {
			return nil, fmt.Errorf("delivery page %d: a record of packet id %d, flags %d", no, d.PacketID, data[2])
		}
		p.Set(d)
	}
	return p, nil
}

// Record returns the record of id from data, the encoded records of its
// page, or ErrNotFound.
func Record(id uint16, data []byte) (Delivery, error) {
	p, err := DecodePage(PageOf(id), data)
	if err != nil {
		return Delivery{}, err
	}
	d, ok := p.Get(id)
	if !ok {
		return Delivery{}, ErrNotFound
	}
	return d, nil
}

// ApplyCommit sets c's deliveries and releases in pages (by page number),
// adding the pages it needs; ids are the ids of c.Messages. It returns the
// numbers of the pages it changed, in order.
func ApplyCommit(pages map[int64]*Page, c *Commit, ids []int64) []int64 {
	dirty := map[int64]bool{}
	for _, cd := range c.Deliveries {
		d := cd.Delivery
		if cd.Message >= 0 {
			d.MessageID = ids[cd.Message]
		}
		no := PageOf(d.PacketID)
		p := pages[no]
		if p == nil {
			p = new(Page)
			pages[no] = p
		}
		p.Set(d)
		dirty[no] = true
	}
	for _, id := range c.Released {
		if p := pages[PageOf(id)]; p != nil && p.Release(id) {
			dirty[PageOf(id)] = true
		}
	}
	nos := make([]int64, 0, len(dirty))
	for no := range dirty {
		nos = append(nos, no)
	}
	slices.Sort(nos)
	return nos
}

// CommitPages returns the numbers of the pages c's deliveries and releases
// fall in, in order.
func CommitPages(c *Commit) []int64 {
	nos := make([]int64, 0, len(c.Deliveries)/PageSize+len(c.Released)+1)
	for _, d := range c.Deliveries {
		nos = append(nos, PageOf(d.PacketID))
	}
	for _, id := range c.Released {
		nos = append(nos, PageOf(id))
	}
	slices.Sort(nos)
	return slices.Compact(nos)
}
