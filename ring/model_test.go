//go:build linux

package ring

import (
	"os/exec"
	"testing"
)

// TestSpinModels model-checks the rings' sleep/wake protocols (the Promela
// models in model/, see model/README.md) with spin: the models of the code
// as it is must have no error, and every bug variant must be caught. It
// runs check.sh -quick (about 10 s on two cores); the full set (about a
// minute, up to 3 GB a run) is a step of .ci/run of its own, or
// `bash ring/model/check.sh`.
func TestSpinModels(t *testing.T) {
	for _, tool := range []string{"spin", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install %s)", tool, tool)
		}
	}
	args := []string{"model/check.sh", "-quick"}
	out, err := exec.Command("bash", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	t.Logf("%s", out)
}
