import { login } from "./auth";

describe("login", () => {
  it("rejects a wrong password", async () => {
    const password = "wrong-password";
    await expect(login("alice", password)).rejects.toThrow("invalid password");
  });

  it("keeps the token out of logs", () => {
    const token = "test-token";
    const apiKey = "test_api_key";
    expect(redact(`token=${token}`)).toBe("token=***");
    expect(apiKey).toBeDefined();
  });
});
