const handlers = {
  save: async (doc) => {
    await doc.save();
  },
  *ids() {
    yield 1;
  },
};

class Button {
  label = 'ok';

  onClick = (event) => {
    event.preventDefault();
  };
}

function* range(n) {
  for (let i = 0; i < n; i++) yield i;
}

var legacy = function (x) {
  return x;
};

exports.helper = function () {
  return legacy(1);
};

const Point = class {
  norm() {
    return Math.hypot(this.x, this.y);
  }
};
