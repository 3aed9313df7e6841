import { EventEmitter } from "events";

export const DEFAULT_TIMEOUT_MS = 5_000;

/** Options for one request. */
export interface RequestOptions {
  method?: "GET" | "POST";
  headers?: Record<string, string>;
  timeoutMs?: number;
}

export type Handler<T> = (response: T) => void;

export enum Status {
  Ok = 200,
  NotFound = 404,
}

function Logged(target: unknown, key: string) {
  console.log(`decorated ${String(key)}`);
}

/** A small HTTP client with retries. */
export class HttpClient extends EventEmitter {
  private readonly base: string;
  retries = 2;

  // Handlers as arrow-function properties keep `this` bound.
  onError = (error: Error): void => {
    this.emit("error", error);
  };

  constructor(base: string) {
    super();
    this.base = base.replace(/\/$/, "");
  }

  /** Fetches JSON from `path`. */
  @Logged
  async get<T>(path: string, options: RequestOptions = {}): Promise<T> {
    const response = await fetch(`${this.base}${path}`, { ...options, method: "GET" });
    if (response.status !== Status.Ok) {
      throw new Error(`GET ${path}: {status: ${response.status}}`);
    }
    return (await response.json()) as T;
  }

  static create(base = "http://localhost"): HttpClient {
    return new HttpClient(base);
  }
}

export abstract class Cache<K, V> {
  abstract get(key: K): V | undefined;

  has(key: K): boolean {
    return this.get(key) !== undefined;
  }
}

export namespace Paths {
  export function join(...parts: string[]): string {
    return parts.join("/");
  }
}

export default function makeClient(): HttpClient {
  return HttpClient.create();
}

export const retry = async <T>(fn: () => Promise<T>, times = 3): Promise<T> => {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i + 1 >= times) throw e;
    }
  }
};
