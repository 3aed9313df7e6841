class P(val x: Int) {
    constructor(s: String) : this(s.length) {
        println(s)
    }
}
