package nftset

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// SetCount is the size of one named set (or map) of a table.
type SetCount struct {
	Name string
	Map  bool
	// Elements counts the elements (an interval counts once, not as its two
	// boundaries); with Truncated, the count stopped there and the set holds
	// more.
	Elements  int
	Truncated bool
}

// Counts returns the number of elements of every named set of the inet table,
// sorted by name, without listing them: the kernel's dump of each set is read
// one datagram at a time into one buffer and only counted, so memory does not
// grow with the sets. limit > 0 stops counting a set after limit elements (it
// is then reported with Truncated) and bounds the time spent on huge sets.
// Options: WithNetNS (the other options are ignored).
func Counts(ctx context.Context, table string, limit int, opts ...Option) ([]SetCount, error) {
	c := config{}
	for _, o := range opts {
		o(&c)
	}
	lister, err := nftables.New(nftables.WithNetNSFd(c.netns))
	if err != nil {
		return nil, fmt.Errorf("nftset: open netlink: %w", err)
	}
	defer lister.CloseLasting()
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	sets, err := lister.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("nftset: list sets of table inet %s: %w", table, kernelErr(err))
	}
	out := []SetCount{}
	for _, s := range sets {
		if s.Anonymous || strings.HasPrefix(s.Name, "__") {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, more, err := countElements(c.netns, table, s.Name, limit)
		if err != nil {
			return nil, fmt.Errorf("nftset: count set %s: %w", s.Name, err)
		}
		out = append(out, SetCount{Name: s.Name, Map: s.IsMap, Elements: n, Truncated: more})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// countElements dumps one set and counts its elements (interval ends left
// out), stopping after limit (> 0) elements; the connection is then closed
// with the rest of the dump unread.
func countElements(netns int, table, set string, limit int) (n int, truncated bool, err error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return 0, false, err
	}
	defer conn.Close()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(table + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(set + "\x00")},
	})
	if err != nil {
		return 0, false, err
	}
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	if _, err := conn.Send(req); err != nil {
		return 0, false, err
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	buf := make([]byte, 1<<16)
	for {
		var nr int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			nr, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN) && !errors.Is(rerr, unix.EWOULDBLOCK)
		}); err != nil {
			return n, false, err
		}
		if rerr != nil {
			return n, false, rerr
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:nr])
		if err != nil {
			return n, false, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return n, false, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return n, false, kernelErr(syscall.Errno(-errno))
					}
				}
				return n, false, nil
			}
			if len(m.Data) < 4 {
				continue
			}
			k, err := countMessage(m.Data[4:])
			if err != nil {
				return n, false, err
			}
			n += k
			if limit > 0 && n >= limit {
				return n, true, nil
			}
		}
	}
}

// countMessage counts the elements of one NFT_MSG_NEWSETELEM message (its
// attributes after the nfgenmsg header), leaving out interval ends.
func countMessage(b []byte) (int, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return 0, err
	}
	n := 0
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				if list.Type() != unix.NFTA_LIST_ELEM {
					continue
				}
				end := false
				list.Nested(func(el *netlink.AttributeDecoder) error {
					el.ByteOrder = binary.BigEndian
					for el.Next() {
						if el.Type() == unix.NFTA_SET_ELEM_FLAGS && el.Uint32()&unix.NFT_SET_ELEM_INTERVAL_END != 0 {
							end = true
						}
					}
					return nil
				})
				if !end {
					n++
				}
			}
			return nil
		})
	}
	return n, ad.Err()
}
