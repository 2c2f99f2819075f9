//go:build vm

package vm

import "testing"

func TestEarlyPanic(t *testing.T) {
	early := "[    3.064727] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI\n[    3.065174] Kernel panic - not syncing: Fatal exception in interrupt\n"
	late := "[    1.9] Freeing unused kernel image (initmem) memory: 3000K\n[    2.0] Run /init as init process\n[   30.1] Kernel panic - not syncing: Attempted to kill init!\n"
	for _, c := range []struct {
		log  string
		want bool
	}{{early, true}, {late, false}, {"[ 2.0] Run /init as init process\n", false}, {"", false}} {
		if got := earlyPanic(c.log); got != c.want {
			t.Errorf("earlyPanic(%q) = %v, want %v", c.log, got, c.want)
		}
	}
}
