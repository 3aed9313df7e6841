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
