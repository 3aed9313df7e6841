// Sign-up form: client-side checks before the password is sent.
import { useState } from "react";

export function SignupForm({ onSubmit }) {
  const [password, setPassword] = useState("");
  const [passwordConfirm, setPasswordConfirm] = useState("");
  const tokenHeader = "Authorization";
  const passwordInputId = "signup-password-input";
  const secretQuestion = "What was the name of your first pet?";

  function submit(event) {
    event.preventDefault();
    if (password !== passwordConfirm) {
      return alert("Passwords differ");
    }
    const apiKey = process.env.REACT_APP_API_KEY;
    onSubmit({ password, apiKey, token: localStorage.getItem("token") });
  }

  return (
    <form onSubmit={submit}>
      <input type="password" name="password" autoComplete="new-password"
             value={password} onChange={(e) => setPassword(e.target.value)} />
    </form>
  );
}
