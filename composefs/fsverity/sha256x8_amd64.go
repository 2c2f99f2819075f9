//go:build !purego

package fsverity

import "golang.org/x/sys/cpu"

//go:generate go run ./internal/genlanes sha256x8_amd64.s

// blocks8 runs the SHA-256 compression function over n 64-byte blocks of
// eight messages at once (sha256x8_amd64.s): lane i's message starts at
// msgs[i], and state[j][i] is lane i's working variable j. k[t] holds
// round constant t in all eight lanes.
//
//go:noescape
func blocks8(state *[8][8]uint32, msgs *[8]*byte, n int, k *[64][8]uint32)

// haveLanes reports whether blocks8 can run here: it needs AVX2 and
// AVX-512 F, VL (rotates and three-input logic on YMM registers, and the
// registers Y16-Y31) and BW (byte shuffles of those registers), with the
// OS saving the AVX-512 state.
var haveLanes = cpu.X86.HasAVX2 && cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BW
