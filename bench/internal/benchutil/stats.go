package benchutil

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Durs is a sample of durations.
type Durs []time.Duration

// Pct is the nearest-rank p-th percentile (0 < p ≤ 100); 0 for no sample.
func (d Durs) Pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Median is Pct(50).
func (d Durs) Median() time.Duration { return d.Pct(50) }

// Ms formats a duration in milliseconds.
func Ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 1:
		return fmt.Sprintf("%.3f", ms)
	case ms < 10:
		return fmt.Sprintf("%.2f", ms)
	default:
		return fmt.Sprintf("%.1f", ms)
	}
}

// Ratio formats a/b; "-" when either is missing.
func Ratio(a, b float64) string {
	if a == 0 || b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// Table prints aligned rows; the first row is the header.
type Table struct {
	rows [][]string
}

// Row adds a row.
func (t *Table) Row(cells ...string) { t.rows = append(t.rows, cells) }

// Print writes the table with a rule under the header.
func (t *Table) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
		if i == 0 {
			rule := make([]string, len(r))
			for j, c := range r {
				rule[j] = strings.Repeat("-", max(3, len([]rune(c))))
			}
			fmt.Fprintln(tw, strings.Join(rule, "\t")+"\t")
		}
	}
	tw.Flush()
}

// Verdict is PASS or MISS, or "n/a" when not measured.
func Verdict(measured, ok bool) string {
	switch {
	case !measured:
		return "n/a"
	case ok:
		return "PASS"
	default:
		return "MISS"
	}
}
