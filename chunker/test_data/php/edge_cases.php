<?php
namespace A {
    function f() {}
    class B {
        public function g() {}
    }
}
