package egress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ctnetlink constants (linux/netfilter/nfnetlink_conntrack.h).
const (
	ipctnlMsgCtGet   = 1
	ctaTupleOrig     = 1
	ctaTupleReply    = 2
	ctaTupleIP       = 1
	ctaTupleProto    = 2
	ctaIPv4Src       = 1
	ctaIPv4Dst       = 2
	ctaIPv6Src       = 3
	ctaIPv6Dst       = 4
	ctaProtoNum      = 1
	ctaProtoSrcPort  = 2
	ctaProtoDstPort  = 3
	nfnlSubsysCtnl   = 1
	nfnetlinkV0      = 0
	nfgenmsgHdrBytes = 4
)

// OriginalDestinations looks up, in the kernel's conntrack table, where a
// connection a local server received was first sent: the destination the
// client chose before a DNAT (the side-door redirect, --intercept-dns). UDP
// has no SO_ORIGINAL_DST, so the reply tuple (server → client) is asked for
// directly (IPCTNL_MSG_CT_GET), one netlink round trip per lookup.
type OriginalDestinations struct {
	conn *netlink.Conn
}

// NewOriginalDestinations opens a ctnetlink socket in the network namespace
// netnsFd (0: the process's).
func NewOriginalDestinations(netnsFd int) (*OriginalDestinations, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFd})
	if err != nil {
		return nil, fmt.Errorf("egress: conntrack: %w", err)
	}
	return &OriginalDestinations{conn: c}, nil
}

// Close closes the socket.
func (o *OriginalDestinations) Close() error { return o.conn.Close() }

// Lookup returns the original destination of the flow whose reply goes from
// server to client over proto (unix.IPPROTO_UDP or IPPROTO_TCP); ok is false
// when conntrack has no such flow.
func (o *OriginalDestinations) Lookup(proto uint8, client, server netip.AddrPort) (dst netip.AddrPort, ok bool, err error) {
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	if client.Addr().Is4() != server.Addr().Is4() {
		return dst, false, errors.New("egress: conntrack: address families differ")
	}
	family := uint8(unix.AF_INET)
	srcAttr, dstAttr := uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
	if client.Addr().Is6() {
		family, srcAttr, dstAttr = unix.AF_INET6, ctaIPv6Src, ctaIPv6Dst
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(ctaTupleReply, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
			ae.Bytes(srcAttr, server.Addr().AsSlice())
			ae.Bytes(dstAttr, client.Addr().AsSlice())
			return nil
		})
		ae.Nested(ctaTupleProto, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(ctaProtoNum, proto)
			ae.Bytes(ctaProtoSrcPort, binary.BigEndian.AppendUint16(nil, server.Port()))
			ae.Bytes(ctaProtoDstPort, binary.BigEndian.AppendUint16(nil, client.Port()))
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return dst, false, err
	}
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysCtnl<<8 | ipctnlMsgCtGet), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append([]byte{family, nfnetlinkV0, 0, 0}, attrs...),
	}
	// The kernel flags its one reply NLM_F_MULTI without a DONE message; the
	// acknowledgement that follows ends the receive.
	msgs, err := o.conn.Execute(req)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return dst, false, nil
		}
		return dst, false, fmt.Errorf("egress: conntrack get: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < nfgenmsgHdrBytes {
			continue
		}
		if d, ok := parseOrigDst(m.Data[nfgenmsgHdrBytes:]); ok {
			return d, true, nil
		}
	}
	return dst, false, nil
}

// parseOrigDst reads CTA_TUPLE_ORIG's destination address and port.
func parseOrigDst(b []byte) (netip.AddrPort, bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return netip.AddrPort{}, false
	}
	var addr netip.Addr
	var port uint16
	for ad.Next() {
		if ad.Type() != ctaTupleOrig {
			continue
		}
		ad.Nested(func(nd *netlink.AttributeDecoder) error {
			for nd.Next() {
				switch nd.Type() {
				case ctaTupleIP:
					nd.Nested(func(id *netlink.AttributeDecoder) error {
						for id.Next() {
							if id.Type() == ctaIPv4Dst || id.Type() == ctaIPv6Dst {
								addr, _ = netip.AddrFromSlice(id.Bytes())
							}
						}
						return nil
					})
				case ctaTupleProto:
					nd.Nested(func(pd *netlink.AttributeDecoder) error {
						for pd.Next() {
							if pd.Type() == ctaProtoDstPort {
								if v := pd.Bytes(); len(v) == 2 {
									port = binary.BigEndian.Uint16(v)
								}
							}
						}
						return nil
					})
				}
			}
			return nil
		})
	}
	if ad.Err() != nil || !addr.IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addr, port), true
}
