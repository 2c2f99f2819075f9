//go:build !amd64 || purego

package fsverity

const haveLanes = false

func blocks8(state *[8][8]uint32, base *byte, stride int, n int, k *[64][8]uint32) {
	panic("fsverity: blocks8 without AVX-512")
}
