class A {
    void f() {
        int x = ;
    }

    void g() {
        return;
    }
}
