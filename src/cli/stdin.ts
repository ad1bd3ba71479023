/** How main.ts passes a `-` argument on (yargs drops a lone "-"); NUL cannot be in a path. */
export const STDIN = '\0-';
