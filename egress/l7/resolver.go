package l7

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/chain"
)

// DNSResolver returns a ChainResolver that asks the DNS server at server
// ("host:port", e.g. the node resolver) for the A and AAAA records of a
// name, over UDP with EDNS0 (TCP when truncated), the whole resolution
// bounded by timeout. The addresses are those whose owner is on the alias chain of the
// answer (chain.Of); Chain is the union of both answers' links. A name
// without addresses is an error.
func DNSResolver(server string, timeout time.Duration) ChainResolver {
	udp := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232}
	tcp := &dns.Client{Net: "tcp", Timeout: timeout}
	exchange := func(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qtype)
		m.SetEdns0(1232, false)
		r, _, err := udp.ExchangeContext(ctx, m, server)
		if err == nil && r.Truncated {
			r, _, err = tcp.ExchangeContext(ctx, m, server)
		}
		if err != nil {
			return nil, err
		}
		if r.Rcode != dns.RcodeSuccess {
			return nil, fmt.Errorf("l7: resolve %s %s: %s", name, dns.Type(qtype), dns.RcodeToString[r.Rcode])
		}
		return r, nil
	}
	return func(ctx context.Context, host string) (Resolution, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var res Resolution
		var errs []error
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			r, err := exchange(ctx, host, qt)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			c := chain.Of(r)
			for _, l := range c.Links {
				if !slices.Contains(res.Chain, l) {
					res.Chain = append(res.Chain, l)
				}
			}
			for _, rr := range r.Answer {
				if !c.Owns(rr.Header().Name) {
					continue
				}
				if ip, ok := chain.Addr(rr); ok {
					res.Addrs = append(res.Addrs, ip)
				}
			}
		}
		if len(res.Addrs) == 0 {
			errs = append(errs, fmt.Errorf("l7: %s has no address", host))
			return res, errors.Join(errs...)
		}
		return res, nil
	}
}
