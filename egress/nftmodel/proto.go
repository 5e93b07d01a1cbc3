package nftmodel

import (
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/policy"
)

// protocols is the one table of the transport protocols the enforcer knows:
// the policy's name, the IP protocol number and the nft keyword.
var protocols = [...]struct {
	proto policy.Protocol
	num   uint8
	name  string
}{
	{policy.ProtocolTCP, unix.IPPROTO_TCP, "tcp"},
	{policy.ProtocolUDP, unix.IPPROTO_UDP, "udp"},
	{policy.ProtocolSCTP, unix.IPPROTO_SCTP, "sctp"},
}

// protoNum returns the IP protocol number of p (0: not a protocol the
// enforcer knows).
func protoNum(p policy.Protocol) uint8 {
	for _, pr := range protocols {
		if pr.proto == p {
			return pr.num
		}
	}
	return 0
}

// protoOf returns the protocol of an IP protocol number.
func ProtoOf(num uint8) (policy.Protocol, bool) {
	for _, pr := range protocols {
		if pr.num == num {
			return pr.proto, true
		}
	}
	return "", false
}

// protoName returns the nft keyword of an IP protocol number, or the number.
func ProtoName(num uint8) string {
	for _, pr := range protocols {
		if pr.num == num {
			return pr.name
		}
	}
	return strconv.Itoa(int(num))
}
