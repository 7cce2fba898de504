package load

import (
	"os"
	"testing"

	"github.com/ripple-sync/ripple/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
