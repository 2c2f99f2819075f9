//go:build !amd64 || purego

package fsverity

const haveLanes = false

func blocks8(state *[8][8]uint32, msgs *[8]*byte, n int, k *[64][8]uint32) {
	panic("fsverity: blocks8 without AVX-512")
}
