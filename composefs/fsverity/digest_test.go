package fsverity

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDigestRoundTrips(t *testing.T) {
	d := DigestBytes([]byte("abc"))
	const hexd = "700b6bd8510f0b4f9bac8b9cf0459151a1c4a99f467892bb4bd289a67df8e19c"
	if d.String() != hexd {
		t.Fatalf("String = %s", d)
	}
	if p, err := ParseDigest(strings.ToUpper(hexd)); err != nil || p != d {
		t.Errorf("ParseDigest(upper) = %s, %v", p, err)
	}
	if d.ObjectPath() != "70/0b6bd8510f0b4f9bac8b9cf0459151a1c4a99f467892bb4bd289a67df8e19c" {
		t.Errorf("ObjectPath = %s", d.ObjectPath())
	}
	for _, p := range []string{d.ObjectPath(), "/" + d.ObjectPath()} {
		if got, err := ParseObjectPath(p); err != nil || got != d {
			t.Errorf("ParseObjectPath(%q) = %s, %v", p, got, err)
		}
	}
	js, err := json.Marshal(map[string]Digest{"d": d})
	if err != nil || string(js) != `{"d":"`+hexd+`"}` {
		t.Fatalf("json = %s, %v", js, err)
	}
	var back map[string]Digest
	if err := json.Unmarshal(js, &back); err != nil || back["d"] != d {
		t.Errorf("json round trip = %v, %v", back, err)
	}
	if d.IsZero() || !(Digest{}).IsZero() {
		t.Error("IsZero wrong")
	}

	d512 := DigestBytes512([]byte("abc"))
	if p, err := ParseDigest512(d512.String()); err != nil || p != d512 || len(d512.String()) != 128 {
		t.Errorf("ParseDigest512 round trip = %s, %v", p, err)
	}
	if d512.ObjectPath() != d512.String()[:2]+"/"+d512.String()[2:] {
		t.Errorf("Digest512.ObjectPath = %s", d512.ObjectPath())
	}
	var u Digest512
	if err := u.UnmarshalText([]byte(d512.String())); err != nil || u != d512 {
		t.Errorf("Digest512.UnmarshalText = %s, %v", u, err)
	}
}

func TestDigestParseErrors(t *testing.T) {
	good := DigestBytes(nil).String()
	for _, s := range []string{"", "abc", good[:63], good + "0", "g" + good[1:], " " + good[1:], good[:62] + "-1"} {
		if _, err := ParseDigest(s); err == nil {
			t.Errorf("ParseDigest(%q) succeeded", s)
		}
	}
	for _, p := range []string{good, good[:2] + "/" + good[2:63], good[:3] + "/" + good[3:], "//" + good[:2] + "/" + good[2:], good[:2] + "/" + good[2:62] + "zz"} {
		if _, err := ParseObjectPath(p); err == nil {
			t.Errorf("ParseObjectPath(%q) succeeded", p)
		}
	}
	if _, err := ParseDigest512(good); err == nil {
		t.Error("ParseDigest512 accepted a SHA-256 digest")
	}
	var d Digest
	if err := d.UnmarshalText([]byte("nothex")); err == nil {
		t.Error("UnmarshalText accepted garbage")
	}
}
