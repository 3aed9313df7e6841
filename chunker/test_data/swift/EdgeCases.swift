actor Counter {
    var n = 0
    func inc() { n += 1 }
}
