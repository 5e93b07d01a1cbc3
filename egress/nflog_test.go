package egress

import (
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/egressd/egressd/policy"
)

func mustHex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParsePacketHeaderReadsAddressesAndPorts(t *testing.T) {
	// IPv4 TCP 10.244.1.1:40000 -> 10.244.2.1:80 (SYN, no options).
	v4 := mustHex(t, "4500003c1c4640004006000a0af40101"+"0af40201"+"9c40"+"0050"+"00000000"+"00000000"+"a002faf0"+"00000000")
	p, ok := ParsePacketHeader(v4)
	if !ok || p.Src != netip.MustParseAddr("10.244.1.1") || p.Dst != netip.MustParseAddr("10.244.2.1") ||
		p.Protocol != policy.ProtocolTCP || p.SrcPort != 40000 || p.DstPort != 80 {
		t.Fatalf("v4: %+v ok=%v", p, ok)
	}
	if c := p.Connection(); c.Port != 80 || c.Protocol != policy.ProtocolTCP {
		t.Fatalf("connection: %+v", c)
	}
	// IPv6 UDP fd00::1:5353 -> fd00::2:81 behind a destination-options header.
	v6 := mustHex(t, "6000000000103c40"+"fd000000000000000000000000000001"+"fd000000000000000000000000000002"+
		"1100000000000000"+"14e900510008abcd")
	p, ok = ParsePacketHeader(v6)
	if !ok || p.Src != netip.MustParseAddr("fd00::1") || p.Dst != netip.MustParseAddr("fd00::2") ||
		p.Protocol != policy.ProtocolUDP || p.SrcPort != 5353 || p.DstPort != 81 {
		t.Fatalf("v6: %+v ok=%v", p, ok)
	}
	// ICMP: addresses, no protocol or ports.
	icmp := mustHex(t, "45000054000040004001000a0af40101"+"0af40201"+"0800f7ff00000000")
	if p, ok := ParsePacketHeader(icmp); !ok || p.Protocol != "" || p.DstPort != 0 {
		t.Fatalf("icmp: %+v ok=%v", p, ok)
	}
	for _, bad := range [][]byte{nil, {0x45}, v4[:19], {0x4f, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, {0x60}, {0x10, 1, 2}} {
		if _, ok := ParsePacketHeader(bad); ok {
			t.Errorf("%x: parsed a malformed header", bad)
		}
	}
}

func FuzzParsePacketHeader(f *testing.F) {
	f.Add(mustHex(f, "4500003c1c4640004006000a0af40101"+"0af40201"+"9c40"+"0050"+"00000000"+"00000000"+"a002faf0"+"00000000"))
	f.Add(mustHex(f, "6000000000103c40"+"fd000000000000000000000000000001"+"fd000000000000000000000000000002"+"1100000000000000"+"14e900510008abcd"))
	f.Add([]byte{0x46, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := ParsePacketHeader(b)
		if ok && (!p.Src.IsValid() || !p.Dst.IsValid()) {
			t.Fatalf("ok without addresses: %+v", p)
		}
	})
}
