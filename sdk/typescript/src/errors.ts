/**
 * Typed errors. Every failed call of this SDK throws an `Automator67Error`: the gRPC status code
 * and message, plus what the controller packs into the status details (the
 * `grpc-status-details-bin` trailer, a serialized google.rpc.Status): `google.rpc.ErrorInfo`
 * (a stable `reason` to branch on, its `domain`, and `metadata` such as `current_etag`) and
 * `google.rpc.BadRequest` (the field violations of an INVALID_ARGUMENT).
 *
 * Details are decoded generically, through a registry of every google.rpc error detail type:
 * whichever the server sends is found, and one it adds later is kept undecoded in `details`.
 */

import { createRegistry, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  file_google_rpc_error_details,
  type BadRequest,
  type ErrorInfo,
} from "../gen/google/rpc/error_details_pb.js";

export { Code };

const DETAILS = createRegistry(file_google_rpc_error_details);

/** One invalid field of a request, from `google.rpc.BadRequest`. */
export interface FieldViolation {
  /** A path to the field, e.g. `node.capabilities.cpu_cores`. */
  readonly field: string;
  /** What is wrong with it, for humans. */
  readonly description: string;
}

/** A failed call: its status code and message, and the details the controller sent with it. */
export class Automator67Error extends Error {
  override name = "Automator67Error";
  /** The gRPC status code. */
  readonly code: Code;
  /** The status code's canonical name, e.g. `NOT_FOUND`. */
  readonly codeName: string;
  /** The controller's message, without the code in front (`message` has it, as Connect's). */
  readonly rawMessage: string;
  /** `ErrorInfo.reason`: a stable UPPER_SNAKE_CASE reason; "" when the server sent none. */
  readonly reason: string;
  /** `ErrorInfo.domain`, e.g. "automator67.io"; "" when the server sent none. */
  readonly domain: string;
  /** `ErrorInfo.metadata`, e.g. `{ current_etag: "..." }` on a stale-etag ABORTED. */
  readonly metadata: Readonly<Record<string, string>>;
  /** `BadRequest.field_violations`; empty when there are none. */
  readonly fieldViolations: readonly FieldViolation[];
  /** Every detail decoded (ErrorInfo, BadRequest, RetryInfo, ...): the google.rpc types. */
  readonly details: readonly Message[];
  /** The response headers and trailers of the failed call. */
  readonly trailers: Headers;
  override readonly cause: ConnectError;

  constructor(error: ConnectError) {
    const name = codeName(error.code);
    super(`[${name}] ${error.rawMessage}`);
    this.cause = error;
    this.code = error.code;
    this.codeName = name;
    this.rawMessage = error.rawMessage;
    this.trailers = error.metadata;
    this.details = error.findDetails(DETAILS);
    const info: ErrorInfo | undefined = error.findDetails(ErrorInfoSchema)[0];
    this.reason = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.metadata = Object.freeze({ ...(info?.metadata ?? {}) });
    this.fieldViolations = Object.freeze(
      error
        .findDetails(BadRequestSchema)
        .flatMap((bad: BadRequest) => bad.fieldViolations)
        .map((v) => Object.freeze({ field: v.field, description: v.description })),
    );
  }

  /** Whether `error` is an Automator67Error with this code (and this reason, if given). */
  static is(error: unknown, code?: Code, reason?: string): error is Automator67Error {
    return (
      error instanceof Automator67Error &&
      (code === undefined || error.code === code) &&
      (reason === undefined || error.reason === reason)
    );
  }
}

/** `error` as an Automator67Error: a ConnectError is wrapped, anything else becomes UNKNOWN
 * (an AbortError becomes CANCELED), as `ConnectError.from` does. */
export function toAutomator67Error(error: unknown): Automator67Error {
  if (error instanceof Automator67Error) return error;
  return new Automator67Error(ConnectError.from(error));
}

/** The canonical gRPC name of a code, e.g. Code.NotFound -> "NOT_FOUND". */
export function codeName(code: Code): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

const CODE_NAMES: Readonly<Record<number, string>> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};
