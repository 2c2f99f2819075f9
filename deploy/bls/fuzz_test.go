package bls

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse: Parse never panics, and whatever it accepts survives
// Marshal and Parse unchanged; ParseFileName and Compare never panic.
// Seeds: testdata/*.conf and testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.conf")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("linux /a\noptions\noptions  x  \n"))
	f.Add([]byte("efi /x.efi\nfoo\r\nbar \r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(bytes.NewReader(data))
		if err != nil {
			if e != nil {
				t.Fatal("entry returned with an error")
			}
			return
		}
		out := e.Marshal()
		again, err := Parse(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("Marshal output does not parse: %v\n%q", err, out)
		}
		if !reflect.DeepEqual(again, e) {
			t.Fatalf("round trip changed the entry:\n%#v\n%#v", e, again)
		}
		if !bytes.Equal(again.Marshal(), out) {
			t.Fatal("Marshal is not deterministic")
		}
		name := string(data[:min(len(data), 40)]) + ".conf"
		n, err := ParseFileName(name)
		if err == nil && n.HasCounter && FileName(n.Base, n.Left, n.Done) != n.String() {
			t.Fatalf("String() of %+v", n)
		}
		_ = Compare(LoadedEntry{FileName: name, Entry: e}, LoadedEntry{FileName: "cfs-1.conf", Entry: e})
	})
}
