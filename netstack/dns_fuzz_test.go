package netstack

import (
	"errors"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzParseAnswer feeds arbitrary bytes, as a hostile DNS server behind the
// tunnel could send, to the resolver's response handling: it must never
// panic, must accept only a response to the question asked, and must
// return only addresses of the type asked for.
func FuzzParseAnswer(f *testing.F) {
	const name = "host.example."
	for _, qtype := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		q, err := newQuery(name, qtype)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(q.msg, uint16(qtype))
		f.Add(fuzzResponse(f, q.id, name, qtype), uint16(qtype))
	}
	f.Add([]byte{}, uint16(dnsmessage.TypeA))
	f.Fuzz(func(t *testing.T, b []byte, qt uint16) {
		qtype := dnsmessage.Type(qt)
		if len(b) < 2 {
			return
		}
		id := uint16(b[0])<<8 | uint16(b[1])
		m, ok := parseAnswer(b, id, name, qtype)
		if !ok {
			return
		}
		if !m.Response || m.ID != id || len(m.Questions) != 1 || m.Questions[0].Type != qtype {
			t.Fatalf("parseAnswer accepted a message that does not answer the query: %+v", m.Header)
		}
		addrs, err := answerAddrs(m, qtype)
		if err != nil {
			if len(addrs) != 0 {
				t.Fatalf("answerAddrs returned addresses with error %v", err)
			}
			return
		}
		for _, a := range addrs {
			if (qtype == dnsmessage.TypeA) != a.Is4() {
				t.Fatalf("answerAddrs returned %v for a query of type %v", a, qtype)
			}
		}
		if len(addrs) == 0 && !errors.Is(err, errDNSNotFound) {
			t.Fatal("no addresses and no error")
		}
	})
}

// fuzzResponse builds a well-formed answer with one address of qtype.
func fuzzResponse(tb testing.TB, id uint16, name string, qtype dnsmessage.Type) []byte {
	tb.Helper()
	qname := dnsmessage.MustNewName(name)
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RecursionAvailable: true})
	b.EnableCompression()
	must := func(err error) {
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(b.StartQuestions())
	must(b.Question(dnsmessage.Question{Name: qname, Type: qtype, Class: dnsmessage.ClassINET}))
	must(b.StartAnswers())
	rh := dnsmessage.ResourceHeader{Name: qname, Class: dnsmessage.ClassINET, TTL: 60}
	if qtype == dnsmessage.TypeA {
		must(b.AResource(rh, dnsmessage.AResource{A: [4]byte{10, 0, 0, 7}}))
	} else {
		must(b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: [16]byte{0xfd, 15: 7}}))
	}
	msg, err := b.Finish()
	must(err)
	return msg
}
