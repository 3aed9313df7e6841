package x

type (
	A struct{ x int }
	B interface{ M() }
)

type List[T any] struct {
	items []T
}

func (l *List[T]) Push(v T) {
	l.items = append(l.items, v)
}

var handler = func() {
}

// Grouped constants stay glue with the code around them.
const (
	Low  = 1
	High = 2
)

func (List[T]) Len() int { return 0 }

func (l List[T]) Each(fn func(T)) {
	for _, v := range l.items {
		fn(v)
	}
}
