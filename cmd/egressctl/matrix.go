package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/egressd/egressd/policy"
)

const matrixHelp = `
Print the reachability matrix: every pod of the workloads file to every pod
(itself included), for every port and protocol, decided by the reference
evaluator in both directions (egress at the source, ingress at the destination),
like the truth tables of the Kubernetes network policy e2e tests.

Each pod is addressed by its first IP of --family; pods without one are left
out (and named on stderr). Cells are ordered by port, then protocol (TCP, UDP,
SCTP), then source, then destination (pods sorted by namespace/name).

  -o table  one grid per port and protocol: rows are sources (from), columns are
            destinations (to); '.' allowed, 'X' denied
  -o json   {"cells": [{"from": "x/a", "to": "y/b", "port": 80,
            "protocol": "TCP", "verdict": "Allow"}, ...]}

Exit status: 0 on success, 1 on invalid input, 2 on a usage error.`

// cell is one entry of the matrix.
type cell struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"`
	Verdict  string `json:"verdict"`
}

type matrixJSON struct {
	Cells []cell `json:"cells"`
}

// endpointIP is a pod with the address it is reached at.
type endpointIP struct {
	key policy.WorkloadKey
	ip  netip.Addr
}

func runMatrix(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("matrix", "-f PATH --workloads FILE [--ports 80,81] [--protocols TCP,UDP,SCTP] [--family ipv4|ipv6] [-o table|json]", matrixHelp)
	var paths stringList
	fs.Var(&paths, "f", "policy file or directory `PATH` (repeatable)")
	workloads := fs.String("workloads", "", "workloads `FILE`: namespaces and pods with labels, IPs and named ports")
	portsFlag := fs.String("ports", "80,81", "destination `ports`, comma-separated; ranges like 8000-8010 allowed")
	protosFlag := fs.String("protocols", "TCP,UDP,SCTP", "`protocols`, comma-separated: TCP, UDP, SCTP")
	family := newChoice("ipv4", "ipv4", "ipv6")
	fs.Var(family, "family", "address `family`: ipv4 or ipv6")
	out := newChoice("table", "table", "json")
	fs.Var(out, "o", "output `format`: table or json")
	eng := addEngineFlags(fs)
	if code, done := parse(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(fs, stderr, "unexpected arguments %q", fs.Args())
	}
	if len(paths) == 0 {
		return usageError(fs, stderr, "no policy files: give -f PATH")
	}
	if *workloads == "" {
		return usageError(fs, stderr, "no workloads file: give --workloads FILE")
	}
	ports, err := parsePorts(*portsFlag)
	if err != nil {
		return usageError(fs, stderr, "--ports: %v", err)
	}
	protos, err := parseProtocols(*protosFlag)
	if err != nil {
		return usageError(fs, stderr, "--protocols: %v", err)
	}
	m, problems, err := loadModel(paths, *workloads, eng.options())
	if err != nil {
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		return failf(fs, stderr, "%v", err)
	}
	pods, missing := matrixPods(m.store, family.value)
	if len(missing) > 0 {
		fmt.Fprintf(stderr, "%s: left out, no %s address: %s\n", fs.Name(), family.value, strings.Join(missing, ", "))
	}
	cells := computeMatrix(m.engine, pods, ports, protos)
	if out.value == "json" {
		if err := writeMatrixJSON(stdout, cells); err != nil {
			return failf(fs, stderr, "%v", err)
		}
		return exitOK
	}
	printMatrix(stdout, pods, ports, protos, cells)
	return exitOK
}

// writeMatrixJSON writes {"cells": [...]} with one cell per line (diffable).
func writeMatrixJSON(w io.Writer, cells []cell) error {
	var b strings.Builder
	b.WriteString(`{"cells": [`)
	for i, c := range cells {
		line, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n  ")
		b.Write(line)
	}
	if len(cells) > 0 {
		b.WriteByte('\n')
	}
	b.WriteString("]}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// matrixPods returns the pods, sorted, with their first address of family,
// and the names of the pods without one.
func matrixPods(s *policy.Store, family string) ([]endpointIP, []string) {
	var pods []endpointIP
	var missing []string
	for _, k := range s.Workloads() {
		w, _ := s.Workload(k)
		ip, ok := firstIP(w, family)
		if !ok {
			missing = append(missing, k.String())
			continue
		}
		pods = append(pods, endpointIP{key: k, ip: ip})
	}
	return pods, missing
}

// computeMatrix decides every cell, in port, protocol, from, to order.
func computeMatrix(e *policy.Engine, pods []endpointIP, ports []int32, protos []policy.Protocol) []cell {
	var cells []cell
	for _, port := range ports {
		for _, proto := range protos {
			for _, from := range pods {
				for _, to := range pods {
					d := e.Decide(policy.Connection{Src: from.ip, Dst: to.ip, Port: port, Protocol: proto})
					cells = append(cells, cell{From: from.key.String(), To: to.key.String(), Port: port, Protocol: string(proto), Verdict: string(d.Verdict)})
				}
			}
		}
	}
	return cells
}

// printMatrix prints one grid per port and protocol.
func printMatrix(w io.Writer, pods []endpointIP, ports []int32, protos []policy.Protocol, cells []cell) {
	n := len(pods)
	i := 0
	for _, port := range ports {
		for _, proto := range protos {
			allowed := 0
			fmt.Fprintf(w, "%s/%d\n", proto, port)
			tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
			header := []string{"from \\ to"}
			for _, p := range pods {
				header = append(header, p.key.String())
			}
			fmt.Fprintln(tw, strings.Join(header, "\t"))
			for _, from := range pods {
				row := []string{from.key.String()}
				for range pods {
					mark := "X"
					if cells[i].Verdict == string(policy.Allow) {
						mark = "."
						allowed++
					}
					row = append(row, mark)
					i++
				}
				fmt.Fprintln(tw, strings.Join(row, "\t"))
			}
			tw.Flush()
			fmt.Fprintf(w, "%d of %d allowed\n\n", allowed, n*n)
		}
	}
	fmt.Fprintln(w, "Legend: rows are sources (from), columns are destinations (to); '.' allowed, 'X' denied.")
}
