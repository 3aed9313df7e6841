namespace Foo.Bar;

public class C
{
    private int _x;
    public int X
    {
        get { return _x; }
        set { _x = value; }
    }
    public static C operator +(C a, C b) => a;
    ~C() { }

    public int this[int i]
    {
        get { return _x + i; }
    }
}
