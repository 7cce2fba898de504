package load

// countOps counts the elements of the top-level "ops" array of a JSON
// object without decoding them: a structural scan that only tracks strings
// and nesting. It reports false when b has no top-level "ops" array or is
// cut short. For valid JSON it agrees with a full decode (FuzzCountOps).
func countOps(b []byte) (int, bool) {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			j, ok := skipString(b, i)
			if !ok {
				return 0, false
			}
			if depth == 1 && string(b[i+1:j]) == "ops" {
				k := skipSpace(b, j+1)
				if k < len(b) && b[k] == ':' {
					k = skipSpace(b, k+1)
					if k < len(b) && b[k] == '[' {
						return countElements(b, k)
					}
					return 0, false
				}
			}
			i = j
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		}
	}
	return 0, false
}

// countElements counts the elements of the array that starts at b[start].
func countElements(b []byte, start int) (int, bool) {
	depth, commas, seen := 0, 0, false
	for i := start; i < len(b); i++ {
		switch b[i] {
		case '"':
			j, ok := skipString(b, i)
			if !ok {
				return 0, false
			}
			if depth == 1 {
				seen = true
			}
			i = j
		case '{', '[':
			if depth == 1 {
				seen = true
			}
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				if !seen {
					return 0, true
				}
				return commas + 1, true
			}
		case ',':
			if depth == 1 {
				commas++
			}
		case ' ', '\t', '\n', '\r':
		default:
			if depth == 1 {
				seen = true
			}
		}
	}
	return 0, false
}

// skipString returns the index of the quote closing the string that starts
// at b[i].
func skipString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j, true
		}
	}
	return 0, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
