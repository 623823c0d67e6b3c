// Lint. The layering rules (which module may import which) are not here: they live in
// .dependency-cruiser.cjs as data, checked by `npm run lint:deps` and by test/layering/.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import jsdoc from 'eslint-plugin-jsdoc';

// Imports dependency-cruiser cannot see, so the layering rules (.dependency-cruiser.cjs) could be
// walked around: a computed `import()` specifier, `require`, `createRequire`. src/ imports only by
// literal specifiers.
const IMPORT_ESCAPES = [
  { selector: "ImportExpression[source.type!='Literal']", message: 'import() only with a literal specifier: the layering rules (dependency-cruiser) must see every import' },
  { selector: "CallExpression[callee.name='require']", message: 'no require in src/: ESM imports only, so the layering rules see every import' },
  { selector: "ImportSpecifier[imported.name='createRequire']", message: 'no createRequire in src/: the layering rules (dependency-cruiser) cannot see what it loads' },
];

export default tseslint.config(
  { ignores: ['scratch/**', 'dist/**', 'node_modules/**', '.lab/**', '.lab-cache/**', 'coverage/**', 'data/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', URL: 'readonly', AbortSignal: 'readonly', fetch: 'readonly', Response: 'readonly', structuredClone: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
    },
  },
  {
    // CommonJS configuration files (.dependency-cruiser.cjs).
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { module: 'writable', require: 'readonly' } },
  },
  {
    // Configuration is read once, in src/config.ts, and passed in (the lab, test infrastructure,
    // reads its own OE_LAB_* settings). One block per file set, each with every selector it needs:
    // a later block matching a file would replace these options, not add to them.
    files: ['src/**/*.ts'],
    ignores: ['src/config.ts', 'src/lab/**'],
    rules: {
      'no-restricted-syntax': ['error', { selector: "MemberExpression[object.name='process'][property.name='env']", message: 'read configuration in src/config.ts and pass it in' }, ...IMPORT_ESCAPES],
    },
  },
  {
    files: ['src/config.ts', 'src/lab/**/*.ts'],
    rules: { 'no-restricted-syntax': ['error', ...IMPORT_ESCAPES] },
  },
  {
    // TSDoc on the public API of src/: exported functions, classes, interfaces, type aliases and enums, and
    // the public methods of exported classes. An error: src/ carries it everywhere, and must keep doing so.
    files: ['src/**/*.ts'],
    plugins: { jsdoc },
    settings: { jsdoc: { mode: 'typescript' } },
    rules: {
      'jsdoc/require-jsdoc': ['error', {
        publicOnly: { esm: true },
        require: { FunctionDeclaration: true, ClassDeclaration: true, ArrowFunctionExpression: true, FunctionExpression: false, MethodDefinition: false },
        contexts: [
          'TSInterfaceDeclaration',
          'TSTypeAliasDeclaration',
          'TSEnumDeclaration',
          // Public methods only: TS `private`/`protected` and `#private` members are not the API.
          'MethodDefinition[kind!="constructor"]:not([accessibility="private"]):not([accessibility="protected"]):not([key.type="PrivateIdentifier"])',
        ],
        checkConstructors: false,
        // No fixer: `eslint --fix` must not insert empty comment blocks.
        enableFixer: false,
      }],
    },
  },
);
