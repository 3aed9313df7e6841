extension (s: String)
  def shout: String = s.toUpperCase

given Ordering[Int] with
  def compare(a: Int, b: Int): Int = a - b
