/** The generated messages, enums and service descriptors of automator67.v1, re-exported. */
export * from "../gen/automator67/v1/agent_service_pb.js";
export * from "../gen/automator67/v1/deployment_pb.js";
export * from "../gen/automator67/v1/deployment_service_pb.js";
export * from "../gen/automator67/v1/heartbeat_pb.js";
export * from "../gen/automator67/v1/node_pb.js";
export * from "../gen/automator67/v1/node_service_pb.js";
