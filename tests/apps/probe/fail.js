// A throw one call away from the handler: its logged stack names both files.
export function raise(message) {
  throw new Error(message);
}
