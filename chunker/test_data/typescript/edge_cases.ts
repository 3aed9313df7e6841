export default class Foo {
  bar() {}
}

declare module "x" {
  export function y(): void;
}

const obj = {
  m() {
    return 1;
  },
  "quoted": function () {},
};

const routes = {
  home: (): string => "/",
};

function Widget(this: { id: number }) {}

Widget.prototype.render = function (): string {
  return "<widget>";
};

function* ids(): Generator<number> {
  yield 1;
}

var legacy = function (x: number): number {
  return x;
};

exports.helper = function (): number {
  return legacy(1);
};

const Point = class {
  norm(): number {
    return 0;
  }
};
