/**
 * The client: one gRPC-over-HTTP/2 connection (Connect's `createGrpcTransport`, straight to the
 * controller, no proxy) with the bearer token and TLS settings, and a typed client per service.
 *
 * Every method of `nodes`, `deployments` and `agent` is the generated one (same request and
 * response types), except that failures are thrown as `Automator67Error` and unary calls get a
 * default deadline. Streams get none: a watch or a heartbeat stream must outlive any deadline.
 */

import type { DescService } from "@bufbuild/protobuf";
import { createClient, type CallOptions, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { SecureClientSessionOptions } from "node:http2";
import { toAutomator67Error } from "./errors.js";
import {
  AgentService,
  DeploymentService,
  NodeService,
  type Deployment,
  type ListDeploymentsRequest,
  type ListNodesRequest,
  type Node,
  type WatchDeploymentsResponse,
  type WatchNodesResponse,
} from "./generated.js";
import { listAll, type ListRequest } from "./paging.js";
import { deploymentWatch, nodeWatch, type Watch, type WatchOptions } from "./watch.js";

/** TLS settings. PEM strings or buffers, as Node's `tls.connect` takes them. */
export interface TlsOptions {
  /** The CA bundle that signed the controller's certificate; default: Node's root CAs. */
  readonly ca?: string | Buffer;
  /** The client certificate chain, for mTLS (a controller with `A67_TLS_CLIENT_CA_FILE`). */
  readonly cert?: string | Buffer;
  /** The client certificate's private key, for mTLS. */
  readonly key?: string | Buffer;
  /** The name the server certificate must carry, when it is not the host of `address`. */
  readonly serverName?: string;
}

/** How to reach the controller. */
export interface ClientOptions {
  /** `host:port` of the controller, e.g. "127.0.0.1:50051". */
  readonly address: string;
  /**
   * The bearer token sent as `authorization: Bearer ...` on every call (`automator67 token
   * create`, or the `agent_token` RegisterNode returned). A function is called per call, so a
   * refreshed token is picked up. None: no header (a controller with `--auth off`).
   */
  readonly token?: string | (() => string | Promise<string>);
  /** TLS, `true` for TLS with Node's root CAs; absent or `false`: plaintext HTTP/2. */
  readonly tls?: TlsOptions | boolean;
  /** The deadline of unary calls that set no `timeoutMs`, ms. Default 30000. */
  readonly timeoutMs?: number;
  /** More Connect interceptors, run after the one that adds the token. */
  readonly interceptors?: readonly Interceptor[];
}

export const DEFAULT_TIMEOUT_MS = 30_000;

/** A connection to one controller. `close()` ends it (and every call on it). */
export class Automator67Client {
  /** NodeService: register, get, list (one page), update (labels, cordon, drain), delete, stats, watch. */
  readonly nodes: Client<typeof NodeService>;
  /** DeploymentService: create, get, list (one page), update, delete, stats, watch. */
  readonly deployments: Client<typeof DeploymentService>;
  /** AgentService: the raw heartbeat stream; `AgentSession` is the helper built on it. */
  readonly agent: Client<typeof AgentService>;
  private readonly sessions: Http2SessionManager;

  constructor(options: ClientOptions) {
    const tls = options.tls === true ? {} : options.tls === false ? undefined : options.tls;
    const baseUrl = `${tls === undefined ? "http" : "https"}://${options.address}`;
    const nodeOptions: SecureClientSessionOptions = {};
    if (tls !== undefined) {
      if (tls.ca !== undefined) nodeOptions.ca = tls.ca;
      if (tls.cert !== undefined) nodeOptions.cert = tls.cert;
      if (tls.key !== undefined) nodeOptions.key = tls.key;
      if (tls.serverName !== undefined) nodeOptions.servername = tls.serverName;
    }
    this.sessions = new Http2SessionManager(baseUrl, {}, nodeOptions);
    const interceptors = [...(options.token === undefined ? [] : [bearer(options.token)])];
    interceptors.push(...(options.interceptors ?? []));
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.sessions,
      interceptors,
    });
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.nodes = typed(NodeService, createClient(NodeService, transport), timeoutMs);
    this.deployments = typed(
      DeploymentService,
      createClient(DeploymentService, transport),
      timeoutMs,
    );
    this.agent = typed(AgentService, createClient(AgentService, transport), timeoutMs);
  }

  /** Every node that matches, over as many ListNodes pages as it takes. */
  listNodes(
    request: ListRequest<ListNodesRequest> = {},
    options?: CallOptions,
  ): AsyncIterable<Node> {
    return listAll(
      (r) => this.nodes.listNodes(r, options),
      request,
      (page) => page.nodes,
    );
  }

  /** Every deployment that matches, over as many ListDeployments pages as it takes. */
  listDeployments(
    request: ListRequest<ListDeploymentsRequest> = {},
    options?: CallOptions,
  ): AsyncIterable<Deployment> {
    return listAll(
      (r) => this.deployments.listDeployments(r, options),
      request,
      (page) => page.deployments,
    );
  }

  /** WatchNodes that reopens a broken stream from the last revision seen. */
  watchNodes(options: WatchOptions = {}): Watch<WatchNodesResponse> {
    return nodeWatch(this.nodes, options);
  }

  /** WatchDeployments that reopens a broken stream from the last revision seen. */
  watchDeployments(options: WatchOptions = {}): Watch<WatchDeploymentsResponse> {
    return deploymentWatch(this.deployments, options);
  }

  /** Closes the connection; calls still open on it fail. */
  close(): void {
    this.sessions.abort();
  }
}

function bearer(token: string | (() => string | Promise<string>)): Interceptor {
  return (next) => async (request) => {
    const value = typeof token === "string" ? token : await token();
    if (!request.header.has("authorization")) {
      request.header.set("authorization", `Bearer ${value}`);
    }
    return next(request);
  };
}

type AnyFn = (request: unknown, options?: CallOptions) => unknown;

/** `client` with every failure thrown as an Automator67Error, and a deadline on unary calls. */
function typed<S extends DescService>(service: S, client: Client<S>, timeoutMs: number): Client<S> {
  const raw = client as unknown as Record<string, AnyFn>;
  const wrapped: Record<string, AnyFn> = {};
  for (const method of service.methods) {
    const call = raw[method.localName];
    if (call === undefined) continue;
    switch (method.methodKind) {
      case "unary":
        wrapped[method.localName] = async (request, options) => {
          try {
            return await call(request, { timeoutMs, ...options });
          } catch (error) {
            throw toAutomator67Error(error);
          }
        };
        break;
      case "client_streaming":
        wrapped[method.localName] = async (request, options) => {
          try {
            return await call(request, options);
          } catch (error) {
            throw toAutomator67Error(error);
          }
        };
        break;
      case "server_streaming":
      case "bidi_streaming":
        wrapped[method.localName] = (request, options) =>
          typedErrorsOf(call(request, options) as AsyncIterable<unknown>);
        break;
    }
  }
  return wrapped as unknown as Client<S>;
}

async function* typedErrorsOf<T>(stream: AsyncIterable<T>): AsyncGenerator<T, void, undefined> {
  try {
    yield* stream;
  } catch (error) {
    throw toAutomator67Error(error);
  }
}
