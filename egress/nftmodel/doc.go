// Package nftmodel is the egress enforcer's intermediate form of its nftables
// table and the renderers of that form.
//
// The form: chains (Chain) of rules (Rule: family, matches, verdict), named
// sets (Set: address ranges, named ports, FQDN pairs) and the verdict maps
// (VmapNames, VmapTarget) that dispatch each workload address to its program
// chains. The renderers: a policy.PlanPolicy to its chains and sets
// (RenderPolicy), a program to its shared chain (RenderProg), the hooked
// chains (BaseChains); the text form in nft syntax (Rule.Text is each
// chain's fingerprint, TableText the whole table for Enforcer.Render); and the
// google/nftables objects and expressions of the kernel transaction
// (Encoder). Object names are part of the form (PolicyChain, RestChain,
// AdminChain, FQDNSetName, content-named sets). The protocol table
// (ProtoNum, ProtoOf, ProtoName) is the one the egress package uses.
//
// The package holds no state and talks to no kernel: the egress Enforcer
// keeps what the kernel holds, decides what to add, rewrite or delete, and
// sends it (see package egress for the kernel objects and the transactions).
package nftmodel
