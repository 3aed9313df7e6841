public @interface Marker {
    String value() default "";
}
record R(int x) {
    R {
        if (x < 0) throw new IllegalArgumentException();
    }
}
