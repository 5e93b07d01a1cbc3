package domain_test

import (
	"fmt"

	"github.com/egressd/egressd/policy/domain"
)

func ExampleParse() {
	p, err := domain.Parse("*.Example.COM.")
	fmt.Println(p, err)
	fmt.Println(p.Match("www.example.com"), p.Match("a.b.example.com"), p.Match("example.com"))

	_, err = domain.Parse("x.a b.com")
	fmt.Println(err)
	// Output:
	// *.example.com <nil>
	// true false false
	// domain pattern "x.a b.com": label 2 "a b" contains illegal character ' '
}

func ExampleSet() {
	var b domain.Builder[int]
	for id, s := range []string{"api.github.com", "*.minepool.com", "xmr-*.com", "**.s3.amazonaws.com", "*"} {
		b.Add(domain.MustParse(s), id)
	}
	set := b.Build()
	fmt.Println(set.MatchAll("eu.MINEPOOL.com."))
	fmt.Println(set.MatchAll("a.b.s3.amazonaws.com"))
	fmt.Println(set.MatchAll("xmr-.com"))
	// Output:
	// [1 4]
	// [3 4]
	// [2 4]
}
