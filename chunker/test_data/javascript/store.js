// store.js: a minimal observable store.
'use strict';

const { EventEmitter } = require('events');

const DEFAULT_STATE = Object.freeze({ count: 0, items: [] });

/**
 * Creates a reducer that ignores unknown actions.
 * @param {Object<string, Function>} handlers
 */
function createReducer(handlers) {
  return function reducer(state, action) {
    const handler = handlers[action.type];
    return handler ? handler(state, action) : state;
  };
}

const counter = createReducer({
  increment: (state) => ({ ...state, count: state.count + 1 }),
  add: (state, { item }) => ({ ...state, items: [...state.items, item] }),
});

/** An observable container of state. */
class Store extends EventEmitter {
  #state;

  constructor(reducer, state = DEFAULT_STATE) {
    super();
    this.reducer = reducer;
    this.#state = state;
  }

  get state() {
    return this.#state;
  }

  /** Applies an action and notifies listeners. */
  dispatch(action) {
    this.#state = this.reducer(this.#state, action);
    this.emit('change', this.#state);
    return action;
  }

  static async *replay(store, actions) {
    for (const action of actions) {
      yield store.dispatch(action);
    }
  }
}

const logger = (store) => {
  store.on('change', (state) => console.log(`state: {${JSON.stringify(state)}}`));
};

Store.prototype.toJSON = function () {
  return { state: this.#state };
};

const api = {
  load() {
    return fetch('/api/state').then((r) => r.json());
  },
};

module.exports = { Store, createReducer, counter, logger, api };
