package testenv

import (
	"bufio"
	"encoding/json"
	"os"
)

// JSONLines returns the JSON objects of the file at path, one per line (an
// audit log): lines that are not a JSON object (one being written) are
// skipped, and a file that does not exist yet has none.
func JSONLines(path string) []map[string]any {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}
