// estargz: converts an uncompressed tar layer to eStargz with stargz-snapshotter's own library
// (Debian's golang-github-containerd-stargz-snapshotter-dev), so that lamina's eStargz reader
// is tested against layers a tool lamina did not write made.
//
//	estargz IN.tar OUT.gz      prints "<toc digest> <diff id>"
//
// Built by the tests (tests/src/lib.rs, estargz_tool) in GOPATH mode, offline:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o estargz main.go
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/containerd/stargz-snapshotter/estargz"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: estargz IN.tar OUT.gz")
		os.Exit(2)
	}
	in, err := os.Open(os.Args[1])
	if err != nil {
		panic(err)
	}
	st, err := in.Stat()
	if err != nil {
		panic(err)
	}
	// chunks of 64 KiB: a big file is several members, as real eStargz layers have them
	b, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()), estargz.WithChunkSize(64<<10))
	if err != nil {
		panic(err)
	}
	out, err := os.Create(os.Args[2])
	if err != nil {
		panic(err)
	}
	if _, err := io.Copy(out, b); err != nil {
		panic(err)
	}
	if err := b.Close(); err != nil {
		panic(err)
	}
	if err := out.Close(); err != nil {
		panic(err)
	}
	fmt.Printf("%s %s\n", b.TOCDigest(), b.DiffID())
}
