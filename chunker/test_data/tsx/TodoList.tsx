import React, { useState } from "react";

export interface Todo {
  id: number;
  title: string;
  done: boolean;
}

type Props = { initial: Todo[] };

/** One row of the list. */
function TodoItem({ todo, onToggle }: { todo: Todo; onToggle: (id: number) => void }) {
  return (
    <li className={todo.done ? "done" : ""} onClick={() => onToggle(todo.id)}>
      {todo.title}
    </li>
  );
}

/** The list, with a form to add todos. */
export const TodoList: React.FC<Props> = ({ initial }) => {
  const [todos, setTodos] = useState(initial);
  const [title, setTitle] = useState("");

  const toggle = (id: number) =>
    setTodos((ts) => ts.map((t) => (t.id === id ? { ...t, done: !t.done } : t)));

  return (
    <div>
      <ul>
        {todos.map((t) => (
          <TodoItem key={t.id} todo={t} onToggle={toggle} />
        ))}
      </ul>
      <input value={title} onChange={(e) => setTitle(e.target.value)} />
    </div>
  );
};

export class ErrorBoundary extends React.Component<{ children: React.ReactNode }, { failed: boolean }> {
  state = { failed: false };

  static getDerivedStateFromError() {
    return { failed: true };
  }

  render() {
    return this.state.failed ? <p>Something went wrong.</p> : this.props.children;
  }
}

export default TodoList;
