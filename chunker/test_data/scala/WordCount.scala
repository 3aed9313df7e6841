package example.wordcount

import scala.collection.mutable
import scala.io.Source

/** Counts words in text files. */
object WordCount {
  val StopWords: Set[String] = Set("a", "an", "the")

  /** Splits a line into lower-case words. */
  def words(line: String): Seq[String] =
    line.split("""[^\p{L}]+""").iterator.map(_.toLowerCase).filter(_.nonEmpty).toSeq

  def count(lines: Iterator[String]): Map[String, Int] = {
    val counts = mutable.Map.empty[String, Int].withDefaultValue(0)
    lines.foreach { line =>
      words(line).filterNot(StopWords).foreach { w => counts(w) += 1 }
    }
    counts.toMap
  }

  @main def run(path: String): Unit = {
    val source = Source.fromFile(path)
    try {
      count(source.getLines()).toSeq.sortBy(-_._2).take(10).foreach { case (w, n) =>
        println(s"$w: $n {${w.length}}")
      }
    } finally source.close()
  }
}

/** Something that reports counts. */
trait Reporter {
  def report(counts: Map[String, Int]): String

  def header: String = "word counts"
}

final case class Summary(total: Int, distinct: Int) extends Reporter {
  override def report(counts: Map[String, Int]): String =
    s"$header: $total words, $distinct distinct"
}

class Histogram(width: Int) {
  private val bar = "#"

  def render(counts: Map[String, Int]): String = {
    val max = counts.values.maxOption.getOrElse(1)
    counts.map { case (w, n) => f"$w%-10s ${bar * (n * width / max)}" }.mkString("\n")
  }
}

enum Mode {
  case Plain, Json

  def extension: String = this match {
    case Plain => "txt"
    case Json  => "json"
  }
}

type Counts = Map[String, Int]
