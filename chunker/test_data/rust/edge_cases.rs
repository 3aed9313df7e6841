/// A value that is either bits or a float.
#[repr(C)]
pub union Bits {
    pub int: u32,
    pub float: f32,
}

extern "C" {
    fn abs(input: i32) -> i32;
}

impl<T: Clone> From<Vec<T>> for Wrapper<T> {
    fn from(items: Vec<T>) -> Self {
        Wrapper(items)
    }
}

const fn square(x: u32) -> u32 {
    x * x
}
