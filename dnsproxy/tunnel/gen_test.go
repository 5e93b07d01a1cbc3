package tunnel

// Traffic generators for the simulation: synthetic tunnels and exfiltration
// (tunnelSession) and benign cluster traffic (benign). Everything is seeded
// and runs on a simulated clock.

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
)

const (
	tA     = 1
	tCNAME = 5
	tMX    = 15
	tTXT   = 16
	tAAAA  = 28
	tSRV   = 33
	tPTR   = 12
	tNULL  = 10
)

// query is one generated lookup.
type query struct {
	name  string
	qtype uint16
	rcode int
	ans   int // answer size in bytes
	data  int // raw data bytes the name carries (tunnels only)
}

// ---- synthetic tunnels ----

// family describes one synthetic tunnel / exfiltration tool.
type family struct {
	name string
	// next returns the next query carrying up to chunk bytes of data.
	next func(r *rand.Rand, s *tunnelState) query
	// chunk is the data per query (bytes).
	chunk int
}

type tunnelState struct {
	domain string
	seq    int
	id     string
	chunk  int
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// labels splits s into labels of at most n characters joined by dots.
func labels(s string, n int) string {
	var sb strings.Builder
	for len(s) > 0 {
		k := min(n, len(s))
		if sb.Len() > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(s[:k])
		s = s[k:]
	}
	return sb.String()
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

const b58alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

func base58(b []byte) string {
	x := new(big.Int).SetBytes(b)
	var out []byte
	m, base := new(big.Int), big.NewInt(58)
	for x.Sign() > 0 {
		x.DivMod(x, base, m)
		out = append(out, b58alphabet[m.Int64()])
	}
	return string(out)
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

var tunnelFamilies = []family{
	{name: "dnscat2-hex-TXT", chunk: 110, next: dnscat2(tTXT)},
	{name: "dnscat2-hex-MX", chunk: 110, next: dnscat2(tMX)},
	{name: "dnscat2-hex-CNAME", chunk: 110, next: dnscat2(tCNAME)},
	{name: "dnscat2-hex-A", chunk: 110, next: dnscat2(tA)},
	{name: "dnscat2-hex-AAAA", chunk: 110, next: dnscat2(tAAAA)},
	{name: "dnscat2-prefixed-hex-TXT", chunk: 100, next: dnscat2Prefixed},
	{name: "dnsexfiltrator-base32-TXT", chunk: 90, next: dnsExfiltrator(false)},
	{name: "dnsexfiltrator-base64url-TXT", chunk: 100, next: dnsExfiltrator(true)},
	{name: "sliver-base32-TXT", chunk: 100, next: sliver(false)},
	{name: "sliver-base58-A", chunk: 100, next: sliver(true)},
	{name: "beacon-prefix-hex-A", chunk: 40, next: beacon},
	{name: "short-labels-base32-A", chunk: 12, next: shortLabels},
	{name: "short-labels-hex-2x-AAAA", chunk: 16, next: shortLabels2},
}

// dnscat2: hex of (packet id, type, session, seq, ack, data) in 63-char labels
// under the C2 domain; record type chosen by the operator.
func dnscat2(qtype uint16) func(*rand.Rand, *tunnelState) query {
	return func(r *rand.Rand, s *tunnelState) query {
		hdr := randBytes(r, 9)
		data := randBytes(r, s.chunk)
		name := labels(hex.EncodeToString(append(hdr, data...)), 63) + "." + s.domain
		ans := 60
		if qtype == tTXT {
			ans = 2*(9+s.chunk) + 40
		}
		return query{name: name, qtype: qtype, ans: ans, data: s.chunk}
	}
}

func dnscat2Prefixed(r *rand.Rand, s *tunnelState) query {
	q := dnscat2(tTXT)(r, s)
	q.name = "dnscat." + q.name
	return q
}

// DNSExfiltrator: "<chunk#>.<encoded data labels>.<domain>" over TXT, base32
// or base64url (case kept).
func dnsExfiltrator(b64 bool) func(*rand.Rand, *tunnelState) query {
	return func(r *rand.Rand, s *tunnelState) query {
		data := randBytes(r, s.chunk)
		var enc string
		if b64 {
			enc = base64.RawURLEncoding.EncodeToString(data)
		} else {
			enc = strings.ToLower(b32.EncodeToString(data))
		}
		s.seq++
		name := fmt.Sprintf("%d.%s.%s", s.seq, labels(enc, 63), s.domain)
		return query{name: name, qtype: tTXT, ans: 50, data: s.chunk}
	}
}

// Sliver: base32 (lower) or base58 of an encrypted envelope, 63-char labels.
func sliver(b58 bool) func(*rand.Rand, *tunnelState) query {
	return func(r *rand.Rand, s *tunnelState) query {
		data := randBytes(r, s.chunk+8)
		var enc string
		qt := uint16(tTXT)
		if b58 {
			enc, qt = base58(data), tA
		} else {
			enc = strings.ToLower(b32.EncodeToString(data))
		}
		return query{name: labels(enc, 63) + "." + s.domain, qtype: qt, ans: 60, data: s.chunk}
	}
}

// beacon: fixed prefixes ("api", "post", "www", "cdn") + hex data + session id.
func beacon(r *rand.Rand, s *tunnelState) query {
	data := randBytes(r, s.chunk)
	name := pick(r, []string{"api", "post", "www", "cdn"}) + "." + labels(hex.EncodeToString(data), 60) + "." + s.id + "." + s.domain
	return query{name: name, qtype: tA, ans: 60, data: s.chunk}
}

// shortLabels: evasion with one label of ≤ 20 base32 characters per query.
func shortLabels(r *rand.Rand, s *tunnelState) query {
	data := randBytes(r, s.chunk)
	enc := strings.ToLower(b32.EncodeToString(data)) // 12 bytes → 20 chars
	return query{name: enc + "." + s.domain, qtype: tA, ans: 60, data: s.chunk}
}

// shortLabels2: two hex labels of 16 characters (8 bytes each).
func shortLabels2(r *rand.Rand, s *tunnelState) query {
	data := randBytes(r, s.chunk)
	return query{name: labels(hex.EncodeToString(data), 16) + "." + s.domain, qtype: tAAAA, ans: 70, data: s.chunk}
}

// ---- benign traffic ----

type site struct {
	domain string
	subs   []string
}

var popular = []site{
	{"google.com", []string{"www", "accounts", "mail", "apis", "oauth2", "play", "clients1", "clients2"}},
	{"googleapis.com", []string{"storage", "www", "oauth2", "pubsub", "bigquery", "container", "logging", "monitoring", "sts", "iamcredentials", "compute", "secretmanager"}},
	{"gstatic.com", []string{"fonts", "www", "ssl", "csi"}},
	{"github.com", []string{"api", "codeload", "uploads", "pipelines", "www", "ghcr"}},
	{"githubusercontent.com", []string{"raw", "objects", "avatars", "release-assets", "pkg-containers"}},
	{"docker.io", []string{"registry-1", "auth", "index", "production.cloudflare"}},
	{"docker.com", []string{"hub", "auth", "desktop", "download"}},
	{"amazon.com", []string{"www", "images-na", "sellercentral", "fls-na"}},
	{"microsoft.com", []string{"login", "www", "graph", "management", "packages", "go"}},
	{"microsoftonline.com", []string{"login", "device", "autologon"}},
	{"azure.com", []string{"management", "portal", "vault"}},
	{"slack.com", []string{"api", "hooks", "wss-primary", "files", "edgeapi"}},
	{"stripe.com", []string{"api", "js", "files", "hooks", "m"}},
	{"twilio.com", []string{"api", "chunderw-vpc-gll", "verify", "conversations"}},
	{"datadoghq.com", []string{"api", "trace.agent", "process", "intake.profile", "http-intake.logs", "app"}},
	{"sentry.io", []string{"o447951.ingest", "o123456.ingest", "browser", "docs"}},
	{"pypi.org", []string{"upload", "test", "www"}},
	{"pythonhosted.org", []string{"files"}},
	{"npmjs.org", []string{"registry", "www"}},
	{"golang.org", []string{"proxy", "sum", "pkg", "go"}},
	{"debian.org", []string{"deb", "security", "ftp.us", "www"}},
	{"ubuntu.com", []string{"archive", "security", "api.snapcraft", "esm", "motd"}},
	{"letsencrypt.org", []string{"acme-v02.api", "r3.o", "e1.o", "x1.c"}},
	{"digicert.com", []string{"ocsp", "crl3", "crl4", "cacerts"}},
	{"salesforce.com", []string{"login", "test", "na1", "eu2"}},
	{"okta.com", []string{"acme", "login", "ok12static"}},
	{"cloudflare.com", []string{"www", "api", "dash", "one.one.one"}},
	{"youtube.com", []string{"www", "m", "i", "s"}},
	{"facebook.com", []string{"www", "graph", "connect", "m"}},
	{"twitter.com", []string{"api", "upload", "www"}},
	{"openai.com", []string{"api", "chat", "platform", "cdn"}},
	{"elastic.co", []string{"artifacts", "cloud", "www", "epr"}},
	{"grafana.net", []string{"prometheus-prod-10-prod-us-central-0", "logs-prod-006", "tempo-prod-04-prod-us-central-0"}},
	{"newrelic.com", []string{"collector", "log-api", "metric-api", "trace-api", "insights-collector"}},
	{"mongodb.net", []string{"cluster0-shard-00-00.ab1cd", "cluster0-shard-00-01.ab1cd", "cluster0.ab1cd"}},
	{"redislabs.com", []string{"redis-12345.c1.us-east-1-2.ec2.cloud", "redis-54321.c2.eu-west-1-1.ec2.cloud"}},
	{"wikipedia.org", []string{"en", "de", "fr", "upload", "www"}},
	{"apple.com", []string{"www", "gateway.icloud", "mesu", "swscan"}},
	{"mozilla.org", []string{"www", "aus5", "firefox.settings.services", "incoming.telemetry"}},
	{"zoom.us", []string{"api", "us02web", "zoom"}},
}

var services = []string{"api", "web", "frontend", "backend", "db", "redis", "postgres", "kafka", "zookeeper", "auth", "payments", "orders", "users", "search", "elasticsearch", "prometheus", "grafana", "jaeger-collector", "otel-collector", "vault", "rabbitmq", "memcached", "minio", "nats", "cart", "catalog", "shipping", "email", "notifications", "ledger"}

var namespaces = []string{"default", "prod", "staging", "payments", "monitoring", "kube-system", "data", "ml", "web", "batch"}

var senderDomains = []string{"gmail.com", "outlook.com", "yahoo.com", "example.org", "contoso.com", "fabrikam.com", "acme-corp.com", "mailchimp.com", "sendgrid.net", "amazonses.com", "zendesk.com", "hubspot.com", "salesforce.com", "atlassian.net", "github.com", "linkedin.com", "paypal.com", "shopify.com", "intercom.io", "mailgun.org"}

var dkimSelectors = []string{"google", "selector1", "selector2", "s1", "s2", "k1", "default", "dkim", "mail", "20230601", "smtpapi", "pm", "mandrill", "scph0123"}

const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

func randStr(r *rand.Rand, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

func uuid(r *rand.Rand) string {
	h := hex.EncodeToString(randBytes(r, 16))
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// workload is one benign pod with its habits.
type workload struct {
	key      string
	ns       string
	rate     float64 // queries per minute (before search-path expansion)
	sites    []site
	cdn      []string // fixed CDN / LB names it uses
	uuids    []string // fixed telemetry names
	churn    bool     // generates a fresh telemetry UUID every ~5 minutes
	mail     bool     // mail relay: DKIM/SPF/DMARC/MX, DNSBL and AV lookups
	av       bool     // endpoint scanner: AV hash lookups
	services []string
}

func cdnName(r *rand.Rand) string {
	switch r.IntN(10) {
	case 0:
		return "d" + randStr(r, alnum, 13) + ".cloudfront.net"
	case 1:
		return fmt.Sprintf("e%d.dscx.akamaiedge.net", r.IntN(99999))
	case 2:
		return fmt.Sprintf("a%d.dscg%d.akamai.net", r.IntN(9999), r.IntN(9))
	case 3:
		return fmt.Sprintf("k8s-%s-%s-%s-%d.elb.us-east-1.amazonaws.com", pick(r, namespaces), pick(r, services), hex.EncodeToString(randBytes(r, 5)), 1000000000+r.IntN(999999999))
	case 4:
		return fmt.Sprintf("internal-%s-%d.eu-west-1.elb.amazonaws.com", pick(r, services), 100000000+r.IntN(899999999))
	case 5:
		return fmt.Sprintf("%s-%s.azurewebsites.net", pick(r, services), randStr(r, "0123456789abcdef", 8))
	case 6:
		return fmt.Sprintf("rr%d---sn-%s.googlevideo.com", 1+r.IntN(5), randStr(r, alnum, 8))
	case 7:
		return fmt.Sprintf("%s.s3.us-west-2.amazonaws.com", pick(r, services)+"-"+randStr(r, alnum, 10))
	case 8:
		return fmt.Sprintf("%s.execute-api.us-east-1.amazonaws.com", randStr(r, alnum, 10))
	}
	return fmt.Sprintf("%s.ssl.fastly.net", randStr(r, alnum, 6))
}

func newWorkload(r *rand.Rand, i int) *workload {
	ns := namespaces[i%len(namespaces)]
	w := &workload{key: fmt.Sprintf("%s/app-%d", ns, i), ns: ns, rate: 0.6 + r.ExpFloat64()*1.8}
	for range 4 + r.IntN(12) {
		w.sites = append(w.sites, pick(r, popular))
	}
	for range 2 + r.IntN(10) {
		w.cdn = append(w.cdn, cdnName(r))
	}
	for range 1 + r.IntN(3) {
		w.uuids = append(w.uuids, uuid(r)+"."+pick(r, []string{"telemetry.vendor-metrics.io", "ods.opinsights.azure.com", "in.applicationinsights.azure.com", "events.statsig-like.dev"}))
	}
	w.churn = i%10 == 3
	w.mail = i%12 == 5
	w.av = i%15 == 7
	for range 3 + r.IntN(8) {
		w.services = append(w.services, pick(r, services))
	}
	return w
}

func reverseIP(r *rand.Rand) string {
	return fmt.Sprintf("%d.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256), 1+r.IntN(223))
}

// emit appends the queries one benign lookup by w causes, search-path
// expansions (ndots:5) first.
func (w *workload) emit(r *rand.Rand, out []query) []query {
	external := func(name string, qtype uint16, ans int) {
		if strings.Count(name, ".") < 4 { // ndots:5 → the search list first
			for _, s := range []string{w.ns + ".svc.cluster.local", "svc.cluster.local", "cluster.local", "ec2.internal"} {
				out = append(out, query{name: name + "." + s + ".", qtype: qtype, rcode: 3, ans: 100})
			}
		}
		out = append(out, query{name: name + ".", qtype: qtype, ans: ans})
	}
	switch x := r.IntN(1000); {
	case x < 420: // cluster services (short names, expanded by the search list)
		svc := pick(r, w.services)
		ns := w.ns
		if r.IntN(4) == 0 {
			ns = pick(r, namespaces)
		}
		name := svc + "." + ns + ".svc.cluster.local."
		if r.IntN(3) == 0 {
			out = append(out, query{name: svc + "." + w.ns + ".svc.cluster.local.", qtype: tAAAA, rcode: 0, ans: 0})
		}
		out = append(out, query{name: name, qtype: tA, ans: 80})
	case x < 720: // popular sites and their subdomains
		s := pick(r, w.sites)
		name := s.domain
		if r.IntN(5) > 0 {
			name = pick(r, s.subs) + "." + s.domain
		}
		external(name, pick(r, []uint16{tA, tA, tAAAA}), 120)
	case x < 850: // CDN and load balancers
		if r.IntN(40) == 0 {
			external(cdnName(r), tA, 150) // a new one now and then
		} else {
			external(pick(r, w.cdn), pick(r, []uint16{tA, tAAAA}), 150)
		}
	case x < 900: // UUID telemetry
		name := pick(r, w.uuids)
		external(name, tA, 100)
	case x < 930: // SRV, SPF, DMARC from any app (service discovery, libraries)
		d := pick(r, senderDomains)
		switch r.IntN(4) {
		case 0:
			external("_"+pick(r, []string{"sip", "xmpp-client", "ldap", "kerberos", "imaps", "submission"})+"._tcp."+d, tSRV, 120)
		case 1:
			external("_spf."+d, tTXT, 300)
		case 2:
			external("_dmarc."+d, tTXT, 200)
		default:
			external(d, tMX, 150)
		}
	case x < 960: // reverse lookups
		out = append(out, query{name: reverseIP(r) + ".in-addr.arpa.", qtype: tPTR, ans: 90})
	default: // NXDOMAIN typos and lookups of old names
		s := pick(r, w.sites)
		out = append(out, query{name: pick(r, []string{"old", "legacy", "v1", "staging", "test"}) + "-" + pick(r, s.subs) + "." + s.domain + ".", qtype: tA, rcode: 3, ans: 100})
	}
	return out
}

// extra appends the workload's periodic lookups of one simulated minute:
// telemetry UUID churn, mail relay checks, AV hash lookups.
func (w *workload) extra(r *rand.Rand, minute int, out []query) []query {
	if w.churn && minute%5 == 0 {
		out = append(out, query{name: uuid(r) + ".telemetry.vendor-metrics.io.", qtype: tA, ans: 100})
	}
	if w.mail {
		for range r.IntN(3) { // an incoming message: sender checks
			d := pick(r, senderDomains)
			out = append(out,
				query{name: pick(r, dkimSelectors) + "._domainkey." + d + ".", qtype: tTXT, ans: 450},
				query{name: d + ".", qtype: tTXT, ans: 300},
				query{name: "_dmarc." + d + ".", qtype: tTXT, ans: 200},
				query{name: d + ".", qtype: tMX, ans: 150})
			ip := reverseIP(r)
			for _, bl := range []string{"zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org", "list.dnswl.org", "dnsbl.example-rbl.org"} {
				out = append(out, query{name: ip + "." + bl + ".", qtype: tA, rcode: 3, ans: 100})
			}
			// URI block lists with hashed/plain domains.
			out = append(out, query{name: hex.EncodeToString(randBytes(r, 16)) + ".dbl.spamhaus.org.", qtype: tA, rcode: 3, ans: 100},
				query{name: pick(r, popular).domain + ".multi.surbl.org.", qtype: tA, rcode: 3, ans: 100},
				query{name: pick(r, popular).domain + ".multi.uribl.com.", qtype: tA, rcode: 3, ans: 100})
		}
	}
	if w.av {
		for range r.IntN(4) {
			h := hex.EncodeToString(randBytes(r, 20))
			switch r.IntN(3) {
			case 0:
				out = append(out, query{name: h[:32] + ".0-0.0-0.0.sxl.v4.sophosxl.net.", qtype: tA, rcode: 3, ans: 100})
			case 1:
				out = append(out, query{name: "0." + h + ".avqs.mcafee.com.", qtype: tA, ans: 90})
			default:
				out = append(out, query{name: h + ".malware.hash.cymru.com.", qtype: tTXT, rcode: 3, ans: 100})
			}
		}
	}
	return out
}
