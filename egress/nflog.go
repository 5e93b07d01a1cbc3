package egress

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/egressd/egressd/egress/nftmodel"

	nflog "github.com/florianl/go-nflog/v2"

	"github.com/egressd/egressd/policy"
)

// LogPrefix is the nflog prefix of the packets the table drops (with WithNFLog).
const LogPrefix = "egressd deny"

// DeniedPacket is the header of a packet the table dropped and logged.
type DeniedPacket struct {
	Time     time.Time
	Src, Dst netip.Addr
	// Protocol is TCP, UDP or SCTP; empty for other protocols (ports are 0).
	Protocol         policy.Protocol
	SrcPort, DstPort uint16
	Prefix           string
}

// Connection is the packet as the policy engine sees a connection attempt.
func (p DeniedPacket) Connection() policy.Connection {
	return policy.Connection{Src: p.Src, Dst: p.Dst, Port: int32(p.DstPort), Protocol: p.Protocol}
}

// ListenDenied reads the packets logged to nflog group (the group passed to
// WithNFLog) and calls fn for each, until ctx ends. netnsFd selects the network
// namespace (0: the process's). Only packet headers are copied from the kernel.
func ListenDenied(ctx context.Context, group uint16, netnsFd int, fn func(DeniedPacket)) error {
	nf, err := nflog.Open(&nflog.Config{
		NetNS:    netnsFd,
		Group:    group,
		Copymode: nflog.CopyPacket,
		Bufsize:  128, // IP + transport headers
		Timeout:  10,  // flush at least every 100 ms
	})
	if err != nil {
		return fmt.Errorf("egress: nflog group %d: %w", group, err)
	}
	defer nf.Close()
	hook := func(a nflog.Attribute) int {
		if a.Payload == nil {
			return 0
		}
		p, ok := ParsePacketHeader(*a.Payload)
		if !ok {
			return 0
		}
		p.Time = time.Now()
		if a.Timestamp != nil {
			p.Time = *a.Timestamp
		}
		if a.Prefix != nil {
			p.Prefix = *a.Prefix
		}
		fn(p)
		return 0
	}
	errc := make(chan error, 1)
	onErr := func(err error) int {
		if ctx.Err() != nil {
			return 1
		}
		// Buffer overruns (ENOBUFS) lose log lines, not packets: keep reading.
		var op interface{ Timeout() bool }
		if errors.As(err, &op) && op.Timeout() {
			return 0
		}
		select {
		case errc <- err:
		default:
		}
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, onErr); err != nil {
		return fmt.Errorf("egress: nflog group %d: %w", group, err)
	}
	<-ctx.Done()
	return nil
}

// ParsePacketHeader reads addresses, protocol and ports from the start of an
// IPv4 or IPv6 packet. It never panics on short or malformed input.
func ParsePacketHeader(b []byte) (DeniedPacket, bool) {
	var p DeniedPacket
	if len(b) < 1 {
		return p, false
	}
	var proto byte
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return p, false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return p, false
		}
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		proto = b[9]
		// Only the first fragment carries the ports.
		if binary.BigEndian.Uint16(b[6:8])&0x1fff == 0 {
			l4 = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return p, false
		}
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		proto, l4 = b[6], b[40:]
		// Skip the common extension headers.
		for range 8 {
			switch proto {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(l4) < 8 {
					return p, true
				}
				proto, l4 = l4[0], l4[min(len(l4), (int(l4[1])+1)*8):]
				continue
			case 44: // fragment
				if len(l4) < 8 {
					return p, true
				}
				if binary.BigEndian.Uint16(l4[2:4])&0xfff8 != 0 {
					return p, true // not the first fragment
				}
				proto, l4 = l4[0], l4[8:]
				continue
			}
			break
		}
	default:
		return p, false
	}
	var known bool
	if p.Protocol, known = nftmodel.ProtoOf(proto); !known {
		return p, true
	}
	if len(l4) >= 4 {
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
	}
	return p, true
}
